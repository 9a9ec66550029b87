"""The U-Nets as ONNX graphs, for bioimage.io packages and ONNX Runtime.

The graph is written from the trained module's weights, layer by layer,
in the layout ONNX and the bioimage.io tools use (batch, channel, y, x):
the inputs' smoothing (UNetConfig.smooth) as mirrored pads and fixed
Gaussian convolutions, each convolution with its batch norm folded in (a
group norm written as its reductions), ReLU, 2x2 max pooling, the
up-convolution as a 1x1 convolution and a depth-to-space shuffle (its
'DCR' order is the one unet.UpConv reshapes in), the skips concatenated,
a sigmoid on the head. No operator takes a fixed shape, so height and
width stay free (multiples of 2**depth) and the batch too.

Why not jax2onnx: it pins orbax-checkpoint below the version the project
checkpoints with, and its symbolic shapes cannot express the U-Net's
halving sides (a height traced as 16*h is not lowered), so its graphs
have a fixed size.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from nucjax.models.unet_config import EXTENDED_ARMS, smoothing_taps

#: ONNX opset of the graphs (ONNX Runtime 1.17 and later run it).
OPSET = 17
#: Names of the graph's inputs: the standard U-Net reads one channel, the
#: extended one a tensor per arm (see unet.EXTENDED_ARMS), in this order.
STANDARD_INPUTS = ("nucleus",)
EXTENDED_INPUTS = ("nucleus", "threshold", "rgb")
OUTPUT = "probabilities"


def input_names(model: str) -> tuple[str, ...]:
    return EXTENDED_INPUTS if model == "extended" else STANDARD_INPUTS


class _Builder:
    """Nodes and weights of a graph, each output named in order."""

    def __init__(self):
        self.nodes, self.weights = [], []
        self._count = itertools.count()

    def name(self, kind: str) -> str:
        return f"{kind}_{next(self._count)}"

    def weight(self, array: np.ndarray, kind: str = "w", dtype=np.float32) -> str:
        name = self.name(kind)
        self.weights.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attributes))
        return out

    def conv(self, x: str, kernel_hwio: np.ndarray, bias: np.ndarray | None) -> str:
        """A stride-1 'same' convolution of a flax (H, W, in, out) kernel."""
        kh, kw = kernel_hwio.shape[:2]
        kernel = np.transpose(kernel_hwio, (3, 2, 0, 1))
        inputs = [x, self.weight(kernel)] + ([self.weight(bias, "b")] if bias is not None else [])
        return self.node("Conv", inputs, kernel_shape=[kh, kw], pads=[(kh - 1) // 2, (kw - 1) // 2, kh // 2, kw // 2])


def _array(variable) -> np.ndarray:
    return np.asarray(variable[...], np.float32)


def _folded(conv, norm) -> tuple[np.ndarray, np.ndarray | None]:
    """(kernel, bias) of a convolution followed by an eval-mode batch norm."""
    kernel = _array(conv.kernel)
    bias = _array(conv.bias) if conv.bias is not None else None
    if norm is None:
        return kernel, bias
    gain = _array(norm.scale) / np.sqrt(_array(norm.var) + norm.epsilon)
    shift = _array(norm.bias) - _array(norm.mean) * gain
    if bias is not None:
        shift = shift + bias * gain
    return kernel * gain, shift


def _group_norm(g: _Builder, x: str, norm) -> str:
    """Group norm of (B, C, H, W): each group of contiguous channels
    standardised over its channels and pixels, then scaled and shifted per
    channel, as flax's GroupNorm (opset 17 has no GroupNormalization)."""
    grouped = g.node("Reshape", [x, g.weight(np.array([0, norm.num_groups, -1]), "shape", np.int64)])
    centred = g.node("Sub", [grouped, g.node("ReduceMean", [grouped], axes=[2], keepdims=1)])
    variance = g.node("ReduceMean", [g.node("Mul", [centred, centred])], axes=[2], keepdims=1)
    spread = g.node("Sqrt", [g.node("Add", [variance, g.weight(np.array(norm.epsilon), "eps")])])
    normed = g.node("Reshape", [g.node("Div", [centred, spread]), g.node("Shape", [x])])
    scaled = g.node("Mul", [normed, g.weight(_array(norm.scale).reshape(1, -1, 1, 1), "scale")])
    return g.node("Add", [scaled, g.weight(_array(norm.bias).reshape(1, -1, 1, 1), "b")])


def _conv_block(g: _Builder, x: str, block) -> str:
    for i, conv in enumerate(block.convs):
        norm = block.norms[i] if block.norms is not None else None
        if hasattr(norm, "num_groups"):
            x = _group_norm(g, g.conv(x, *_folded(conv, None)), norm)
        else:
            x = g.conv(x, *_folded(conv, norm))
        x = g.node("Relu", [x])
    return x  # dropout is the identity at prediction


def _smoothed(g: _Builder, x: str, channels: int, sigma: float) -> str:
    """unet.smooth_inputs: each channel mirrored at its edges and convolved
    with the Gaussian taps along y, then along x."""
    if not sigma:
        return x
    taps = smoothing_taps(sigma)
    radius = len(taps) // 2
    for axis in (2, 3):
        pads = np.zeros(8, np.int64)
        pads[[axis, axis + 4]] = radius
        padded = g.node("Pad", [x, g.weight(pads, "pads", np.int64)], mode="reflect")
        shape = [channels, 1, len(taps), 1] if axis == 2 else [channels, 1, 1, len(taps)]
        x = g.node("Conv", [padded, g.weight(np.broadcast_to(taps.reshape(1, 1, *shape[2:]), shape))],
                   group=channels, kernel_shape=shape[2:])
    return x


def _encoder(g: _Builder, x: str, encoder) -> tuple[list[str], str]:
    skips = []
    for block in encoder.blocks:
        x = _conv_block(g, x, block)
        skips.append(x)
        x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    return skips, x


def _up(g: _Builder, x: str, up) -> str:
    shuffled = g.node("DepthToSpace", [g.conv(x, _array(up.conv.kernel), None)], blocksize=2, mode="DCR")
    return g.node("Add", [shuffled, g.weight(_array(up.bias).reshape(1, -1, 1, 1), "b")])


def _decoder(g: _Builder, skips: list[str], x: str, decoder) -> str:
    x = _conv_block(g, x, decoder.bottleneck)
    for up, block, skip in zip(decoder.ups, decoder.blocks, reversed(skips)):
        x = _conv_block(g, g.node("Concat", [_up(g, x, up), skip], axis=1), block)
    return g.conv(x, _array(decoder.head.kernel), _array(decoder.head.bias))


def network_graph(network, name: str = "nucjax-unet") -> onnx.ModelProto:
    """The ONNX model of a trained UNet or MultiArmUNet (see input_names for
    its inputs, (B, C, H, W) float32 in 0..1 each) giving (B, K, H, W)
    probabilities: the network's sigmoid, as nucjax predicts with."""
    config = network.config
    names = input_names(config.model)
    channels = EXTENDED_ARMS if config.model == "extended" else (config.in_channels,)
    g = _Builder()
    smoothed = [_smoothed(g, x, c, config.smooth) for x, c in zip(names, channels)]
    if config.model == "extended":
        found = [_encoder(g, x, arm) for x, arm in zip(smoothed, network.arms)]
        skips = [g.node("Concat", list(level), axis=1) for level in zip(*(s for s, _ in found))]
        bottom = g.node("Concat", [b for _, b in found], axis=1)
    else:
        skips, bottom = _encoder(g, smoothed[0], network.encoder)
    logits = _decoder(g, skips, bottom, network.decoder)
    g.nodes.append(helper.make_node("Sigmoid", [logits], [OUTPUT], name=OUTPUT))
    free = ["batch", "height", "width"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [free[0], c, free[1], free[2]])
              for n, c in zip(names, channels)]
    output = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [free[0], config.out_channels, free[1], free[2]])
    graph = helper.make_graph(g.nodes, name, inputs, [output], initializer=g.weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nucjax")
    model.ir_version = 8  # what ONNX Runtime 1.17+ reads
    onnx.checker.check_model(model)
    return model


def onnx_forward(graph: bytes, model: str):
    """A forward like the JAX one, (B, H, W, C) float32 in 0..1 ->
    (B, H, W, K) probabilities, running an ONNX graph of network_graph
    with ONNX Runtime: the channels are split into the graph's inputs."""
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    names = input_names(model)
    bounds = [0, *itertools.accumulate(EXTENDED_ARMS)] if model == "extended" else [0, None]

    def forward(x: np.ndarray) -> np.ndarray:
        planar = np.asarray(x, np.float32).transpose(0, 3, 1, 2)
        feeds = {n: np.ascontiguousarray(planar[:, a:b]) for n, a, b in zip(names, bounds[:-1], bounds[1:])}
        return session.run([OUTPUT], feeds)[0].transpose(0, 2, 3, 1)

    return forward

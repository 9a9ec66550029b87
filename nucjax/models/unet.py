"""The reference report's U-Nets in flax.nnx: the standard one, and the
multi-arm "extended" one with an encoder per input.

Both are fully convolutional: any (B, H, W, C) input whose H and W divide
by 2**depth gives (B, H, W, out_channels) logits.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nucjax.models.unet_config import EXTENDED_ARMS, GROUP_CHANNELS, MODELS, UNetConfig, smoothing_taps  # noqa: F401 (re-exported)


def lecun_normal_on_host(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """flax's default kernel initialiser (normal, truncated at two standard
    deviations, variance 1 / fan-in), drawn by numpy from the key's bits.
    JAX compiles its sampler once per kernel shape, 1-5 s each on a CPU: a
    U-Net's ~20 shapes cost a fresh process more than compiling its train step."""
    bits = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    rng = np.random.default_rng(np.asarray(bits, dtype=np.uint32).ravel())
    values = rng.standard_normal(int(np.prod(shape)))
    outside = np.abs(values) > 2
    while outside.any():  # redraw past two standard deviations, as jax.random.truncated_normal's range does
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2
    fan_in = int(np.prod(shape[:-1]))
    # 0.8796 is the standard deviation of a unit normal truncated at +-2: rescaled to variance 1 / fan-in.
    return jnp.asarray(values.reshape(shape) * (np.sqrt(1.0 / fan_in) / 0.87962566103423978), dtype)


class ConvBlock(nnx.Module):
    """Two 3x3 'same' convolutions, each followed by the config's norm and ReLU."""

    def __init__(self, in_features: int, features: int, config: UNetConfig, rngs: nnx.Rngs, dtype=None):
        self.convs = nnx.List(
            [nnx.Conv(i, features, (3, 3), padding="SAME", use_bias=not config.normalises, dtype=dtype,
                      kernel_init=lecun_normal_on_host, rngs=rngs)
             for i in (in_features, features)]
        )
        self.norms = nnx.List([norm_layer(features, config, rngs, dtype) for _ in range(2)]) if config.normalises else None
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs) if config.dropout else None

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = nnx.relu(x)
        return self.dropout(x) if self.dropout is not None else x


def smooth_inputs(x: jax.Array, sigma: float) -> jax.Array:
    """(B, H, W, C) inputs smoothed by a Gaussian of sigma px (UNetConfig.smooth), each channel on its
    own, along rows then columns over mirrored edges, as weighted sums of shifted slices; sigma 0
    returns x."""
    if not sigma:
        return x
    taps = smoothing_taps(sigma)
    radius = len(taps) // 2
    height, width = x.shape[1:3]
    x = jnp.pad(x, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode="reflect")
    x = sum(float(t) * x[:, i : i + height] for i, t in enumerate(taps))
    x = jnp.pad(x, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode="reflect")
    return sum(float(t) * x[:, :, i : i + width] for i, t in enumerate(taps))


def norm_layer(features: int, config: UNetConfig, rngs: nnx.Rngs, dtype=None) -> nnx.Module:
    if config.norm == "group":
        return nnx.GroupNorm(features, num_groups=max(1, features // GROUP_CHANNELS), dtype=dtype, rngs=rngs)
    return nnx.BatchNorm(features, momentum=0.9, dtype=dtype, rngs=rngs)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2, as a reshape and a max.

    Same result as nnx.max_pool, but its gradient is a plain reduction:
    4x faster on CPU than XLA's select-and-scatter.
    """
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class UpConv(nnx.Module):
    """A 2x2, stride-2 transposed convolution, computed as a 1x1 convolution
    to 4 x features followed by a depth-to-space shuffle.

    The same function and parameter count as nnx.ConvTranspose with a 2x2
    kernel and stride 2 (its outputs do not overlap), without the 4x work
    on inserted zeros that XLA spends on CPU.
    """

    def __init__(self, in_features: int, features: int, rngs: nnx.Rngs, dtype=None):
        self.features = features
        self.conv = nnx.Conv(in_features, 4 * features, (1, 1), use_bias=False, dtype=dtype,
                             kernel_init=lecun_normal_on_host, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((features,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, _ = x.shape
        y = self.conv(x).reshape(b, h, w, 2, 2, self.features)
        return y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, self.features) + self.bias[...].astype(y.dtype)


class Encoder(nnx.Module):
    """The down path: returns the skip of every level and the bottleneck input."""

    def __init__(self, in_channels: int, config: UNetConfig, rngs: nnx.Rngs, dtype=None):
        widths = [config.base_filters * 2**i for i in range(config.depth)]
        self.blocks = nnx.List([ConvBlock(c, w, config, rngs, dtype) for c, w in zip([in_channels] + widths[:-1], widths)])

    def __call__(self, x: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
            x = max_pool_2x2(x)
        return skips, x


class Decoder(nnx.Module):
    """Bottleneck, then the up path with transposed convolutions and skips, then the 1x1 head.

    arms: how many encoders feed it; their skips arrive concatenated.
    """

    def __init__(self, config: UNetConfig, arms: int, rngs: nnx.Rngs, dtype=None):
        widths = [config.base_filters * 2**i for i in range(config.depth)]
        bottom = config.base_filters * 2**config.depth
        self.bottleneck = ConvBlock(arms * widths[-1], bottom, config, rngs, dtype)
        self.ups = nnx.List([])
        self.blocks = nnx.List([])
        below = bottom
        for width in reversed(widths):
            self.ups.append(UpConv(below, width, rngs, dtype))
            self.blocks.append(ConvBlock(width + arms * width, width, config, rngs, dtype))
            below = width
        self.head = nnx.Conv(widths[0], config.out_channels, (1, 1), dtype=dtype, kernel_init=lecun_normal_on_host, rngs=rngs)

    def __call__(self, skips: list[jax.Array], x: jax.Array) -> jax.Array:
        x = self.bottleneck(x)
        for up, block, skip in zip(self.ups, self.blocks, reversed(skips)):
            x = block(jnp.concatenate([up(x), skip], axis=-1))
        return self.head(x)


class UNet(nnx.Module):
    """The standard U-Net: one encoder on the preprocessed grey image."""

    def __init__(self, config: UNetConfig, rngs: nnx.Rngs, dtype=None):
        self.config = config
        self.encoder = Encoder(config.in_channels, config, rngs, dtype)
        self.decoder = Decoder(config, 1, rngs, dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        self.config.check_input_size(*x.shape[1:3])
        return self.decoder(*self.encoder(smooth_inputs(x, self.config.smooth)))


class MultiArmUNet(nnx.Module):
    """The extended U-Net: an encoder per input (preprocessed image, adaptive
    threshold, RGB), joined at the bottleneck and at every skip connection."""

    def __init__(self, config: UNetConfig, rngs: nnx.Rngs, dtype=None):
        self.config = config
        self.arms = nnx.List([Encoder(c, config, rngs, dtype) for c in EXTENDED_ARMS])
        self.decoder = Decoder(config, len(EXTENDED_ARMS), rngs, dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        self.config.check_input_size(*x.shape[1:3])
        x = smooth_inputs(x, self.config.smooth)
        bounds = [0, *itertools.accumulate(EXTENDED_ARMS)]
        outputs = [arm(x[..., a:b]) for arm, a, b in zip(self.arms, bounds[:-1], bounds[1:])]
        skips = [jnp.concatenate(level, axis=-1) for level in zip(*(skips for skips, _ in outputs))]
        bottom = jnp.concatenate([bottom for _, bottom in outputs], axis=-1)
        return self.decoder(skips, bottom)


def build_model(config: UNetConfig, seed: int = 0, precision: str = "float32") -> nnx.Module:
    """A freshly initialised model for the config. Parameters are float32
    whatever the precision; 'bfloat16' computes activations and
    convolutions in bfloat16 (mixed precision, for accelerators)."""
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    dtype = jnp.bfloat16 if precision == "bfloat16" else None
    return (MultiArmUNet if config.model == "extended" else UNet)(config, rngs, dtype)

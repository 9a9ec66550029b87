"""How much memory a U-Net needs, after the reference report's Annex 5.

Activation memory per image counts every feature map the forward pass
keeps for the backward pass (convolution, batch-norm and ReLU outputs,
pooled maps, up-sampled and concatenated maps) in float32. XLA fuses and
reuses buffers, so a real training step needs less: on CPU its temporary
buffers per image were 0.88-0.94 of this count at 128-256 px with batch
norm, 0.5-0.6 at 64 px or without batch norm. The count is therefore used
as it is (TRAINING_FACTOR 1), an upper bound, plus four copies of the
parameters (weights, gradients, Adam's two moments). Search uses
largest_batch to pick batch sizes at 512 x 512.
"""

from __future__ import annotations

from nucjax.models.unet_config import EXTENDED_ARMS, UNetConfig

BYTES = 4  # float32
#: Training memory per image over activation_bytes: XLA's own buffer
#: analysis stayed below 1 in every configuration measured (tests/test_unet.py).
TRAINING_FACTOR = 1.0


def activation_bytes(config: UNetConfig, height: int, width: int) -> int:
    """Bytes of the feature maps one image of (height, width) leaves for the backward pass."""
    config.check_input_size(height, width)
    per_conv = 3 if config.normalises else 2  # conv, (norm), relu outputs
    arms = EXTENDED_ARMS if config.model == "extended" else (1,)
    total = 0
    for level in range(config.depth):
        pixels = (height >> level) * (width >> level)
        width_l = config.base_filters * 2**level
        encoder = len(arms) * (2 * per_conv * width_l + width_l // 4)  # two convs, then a 2x2 pool
        decoder = width_l + (1 + len(arms)) * width_l + 2 * per_conv * width_l  # up, concat, two convs
        total += pixels * (encoder + decoder)
    bottom = (height >> config.depth) * (width >> config.depth)
    total += bottom * 2 * per_conv * config.base_filters * 2**config.depth
    total += height * width * (sum(arms) + config.out_channels)  # input and logits
    return total * BYTES


def parameter_count(config: UNetConfig) -> int:
    """Trainable parameters, counted from the architecture."""
    arms = EXTENDED_ARMS if config.model == "extended" else (1,)
    widths = [config.base_filters * 2**i for i in range(config.depth)]
    bottom = config.base_filters * 2**config.depth
    bias = 0 if config.normalises else 1
    norm = 2 if config.normalises else 0

    def block(c_in, c_out):
        return 9 * c_in * c_out + 9 * c_out * c_out + 2 * (c_out * (bias + norm))

    total = 0
    for channels in arms:
        for c_in, c_out in zip([channels] + widths[:-1], widths):
            total += block(c_in, c_out)
    total += block(len(arms) * widths[-1], bottom)
    below = bottom
    for w in reversed(widths):
        total += 4 * below * w + w  # transposed conv
        total += block(w + len(arms) * w, w)
        below = w
    total += widths[0] * config.out_channels + config.out_channels
    return total


def multiply_adds(config: UNetConfig, height: int, width: int) -> int:
    """Multiply-adds of one forward pass over an image of (height, width):
    every convolution's kernel applied at every pixel of its level. A
    training step costs about three forward passes per image; what the
    search's equal-time units compare (search.halving.equal_time_steps)."""
    config.check_input_size(height, width)
    arms = EXTENDED_ARMS if config.model == "extended" else (1,)
    widths = [config.base_filters * 2**i for i in range(config.depth)]
    bottom = config.base_filters * 2**config.depth

    def block(c_in, c_out, pixels):
        return pixels * 9 * (c_in * c_out + c_out * c_out)

    def pixels(level):
        return (height >> level) * (width >> level)

    total = 0
    for channels in arms:
        for level, (c_in, c_out) in enumerate(zip([channels] + widths[:-1], widths)):
            total += block(c_in, c_out, pixels(level))
    total += block(len(arms) * widths[-1], bottom, pixels(config.depth))
    below = bottom
    for level in reversed(range(config.depth)):
        w = widths[level]
        total += pixels(level) * below * w  # 2x2 transposed conv, stride 2: one kernel tap per output pixel
        total += block(w + len(arms) * w, w, pixels(level))
        below = w
    return total + height * width * widths[0] * config.out_channels


def training_bytes(config: UNetConfig, height: int, width: int, batch: int) -> int:
    """Estimated peak memory of one training step."""
    return int(TRAINING_FACTOR * batch * activation_bytes(config, height, width) + 4 * BYTES * parameter_count(config))


def largest_batch(config: UNetConfig, size: int, device_bytes: int, headroom: float = 0.8) -> int:
    """The largest batch of size x size images whose training step fits in
    headroom x device_bytes; at least 1."""
    budget = headroom * device_bytes - 4 * BYTES * parameter_count(config)
    per_image = TRAINING_FACTOR * activation_bytes(config, size, size)
    return max(1, int(budget // per_image))

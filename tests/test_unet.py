import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from nucjax.models.memory import activation_bytes, largest_batch, parameter_count, training_bytes
from nucjax.models.unet import UNetConfig, build_model


@pytest.mark.parametrize(
    "config, shape",
    [
        (UNetConfig(depth=2, base_filters=4), (2, 32, 48)),
        (UNetConfig(depth=3, base_filters=4, out_channels=2), (1, 64, 40)),
        (UNetConfig(model="extended", depth=2, base_filters=4, out_channels=2), (2, 32, 32)),
        (UNetConfig(depth=2, base_filters=4, norm="none", dropout=0.2), (1, 16, 64)),
        (UNetConfig(depth=2, base_filters=4, norm="group", out_channels=2), (2, 32, 32)),
    ],
)
def test_forward_shapes(config, shape):
    model = build_model(config)
    model.eval()
    x = jnp.ones(shape + (config.in_channels,))
    assert model(x).shape == shape + (config.out_channels,)


def test_fully_convolutional_a_crop_model_predicts_a_bigger_image():
    model = build_model(UNetConfig(depth=2, base_filters=4))
    model.eval()
    assert model(jnp.zeros((1, 32, 32, 1))).shape == (1, 32, 32, 1)
    assert model(jnp.zeros((1, 96, 128, 1))).shape == (1, 96, 128, 1)


def test_group_norm_uses_each_images_own_statistics():
    """An image's prediction does not depend on the batch it comes in, nor on
    training or evaluation mode: nothing learned about the training set's
    intensities stands between an unseen experiment and the model."""
    model = build_model(UNetConfig(depth=2, base_filters=8, norm="group"))
    image = jax.random.uniform(jax.random.key(0), (1, 32, 32, 1))
    others = jax.random.uniform(jax.random.key(1), (3, 32, 32, 1)) * 5.0
    model.train()
    in_training = model(jnp.concatenate([image, others]))[:1]
    model.eval()
    alone = model(image)
    assert jnp.abs(alone - in_training).max() < 1e-5
    batch_norm = build_model(UNetConfig(depth=2, base_filters=8))
    batch_norm.train()  # the same check fails with batch norm: batch statistics mix the images
    assert jnp.abs(batch_norm(image) - batch_norm(jnp.concatenate([image, others]))[:1]).max() > 1e-3


def test_input_smoothing_is_a_normalised_gaussian_of_its_sigma_with_mirrored_edges():
    """An impulse spreads to the Gaussian of the config's sigma (variance
    sigma^2 along each axis, nothing lost); a constant and a ramp stay as
    they are, at the edges too (mirrored, not zero-padded); 0 changes nothing."""
    from nucjax.models.unet import smooth_inputs

    impulse = jnp.zeros((1, 33, 33, 1)).at[0, 16, 16, 0].set(1.0)
    spread = smooth_inputs(impulse, 1.5)[0, :, :, 0]
    offsets = jnp.arange(33) - 16
    assert abs(float(spread.sum()) - 1.0) < 1e-5
    assert abs(float((spread.sum(axis=1) * offsets**2).sum()) - 1.5**2) < 0.02
    assert float(spread[16, 16]) < 0.1 and jnp.allclose(spread, spread.T, atol=1e-7)
    constant = jnp.full((2, 16, 24, 3), 0.7)
    assert jnp.abs(smooth_inputs(constant, 2.0) - 0.7).max() < 1e-6
    ramp = jnp.broadcast_to(jnp.linspace(0, 1, 24), (1, 16, 24))[..., None]
    assert jnp.abs(smooth_inputs(ramp, 1.0) - ramp)[:, :, 3:-3].max() < 1e-6  # linear inside; the mirror bends the edges
    noise = jax.random.uniform(jax.random.key(0), (1, 32, 32, 1))
    assert smooth_inputs(noise, 0.0) is noise
    assert float(smooth_inputs(noise, 1.0).std()) < 0.5 * float(noise.std())  # fine texture is what it takes away
    with pytest.raises(ValueError, match="smooth"):
        UNetConfig(smooth=-1.0)


def test_a_smoothing_model_reads_its_inputs_smoothed():
    """The network's first operation: the same network with smooth=1 gives
    on an image what it gives with smooth=0 on the image smoothed."""
    from nucjax.models.unet import smooth_inputs

    sharp = build_model(UNetConfig(depth=2, base_filters=4))
    smoothing = build_model(UNetConfig(depth=2, base_filters=4, smooth=1.0))
    sharp.eval(), smoothing.eval()
    image = jax.random.uniform(jax.random.key(2), (1, 32, 32, 1))
    assert jnp.abs(smoothing(image) - sharp(smooth_inputs(image, 1.0))).max() < 1e-5
    assert jnp.abs(smoothing(image) - sharp(image)).max() > 1e-3


def test_configs_written_before_the_norm_choice_read_as_they_trained():
    from nucjax.config import ExperimentConfig

    for batch_norm, norm in ((True, "batch"), (False, "none")):
        data = ExperimentConfig().to_dict()
        del data["model"]["norm"]
        data["model"]["batch_norm"] = batch_norm
        assert ExperimentConfig.from_dict(data).model.norm == norm
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        UNetConfig(norm="layer")
    data = ExperimentConfig().to_dict()
    del data["model"]["smooth"]  # written before the inputs were smoothed
    assert ExperimentConfig.from_dict(data).model.smooth == 0.0


def test_report_default_is_8_to_64_with_a_128_bottleneck():
    config = UNetConfig()
    model = build_model(config)
    kernels = [v.shape for v in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)) if v.ndim == 4 and v.shape[0] == 3]
    widths = sorted({k[-1] for k in kernels})
    assert widths == [8, 16, 32, 64, 128]


def test_size_not_divisible_by_two_to_the_depth_is_a_clear_error():
    model = build_model(UNetConfig(depth=3, base_filters=4))
    with pytest.raises(ValueError, match="does not divide by 2\\*\\*depth = 8"):
        model(jnp.zeros((1, 36, 32, 1)))


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        UNetConfig(model="resnet")


@pytest.mark.parametrize("config", [UNetConfig(), UNetConfig(model="extended", out_channels=2, norm="none"),
                                    UNetConfig(base_filters=8, norm="group")])
def test_parameter_count_matches_the_model(config):
    params = nnx.state(build_model(config), nnx.Param)
    assert parameter_count(config) == sum(p.size for p in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize(
    "config",
    [UNetConfig(depth=3, base_filters=8, out_channels=2), UNetConfig(model="extended", depth=3, base_filters=8, out_channels=2)],
)
def test_memory_estimate_bounds_what_xla_allocates(config):
    from conftest import tiny_experiment
    from nucjax.train.loop import make_optimizer, make_update

    experiment = tiny_experiment(model=config.__dict__)
    model = build_model(config)
    step = nnx.jit(make_update(experiment))  # the step on a given batch: the estimate leaves the training set out
    optimizer = make_optimizer(model, experiment.train)
    x, y = jnp.zeros((2, 64, 64, config.in_channels)), jnp.zeros((2, 64, 64, 2))
    analysis = step.lower(model, optimizer, x, y).compile().memory_analysis()
    used = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
    estimate = training_bytes(config, 64, 64, 2)
    assert used <= estimate <= 3 * used


def test_largest_batch_shrinks_with_size_and_grows_with_memory():
    config = UNetConfig(base_filters=16, out_channels=2)
    gib = 2**30
    assert largest_batch(config, 512, 16 * gib) < largest_batch(config, 256, 16 * gib)
    assert largest_batch(config, 512, 80 * gib) > largest_batch(config, 512, 16 * gib)
    assert largest_batch(config, 512, 10**6) == 1
    # At 512 px a 16 GiB card holds batches of about 16 GiB / activations.
    per_image = activation_bytes(config, 512, 512)
    assert abs(largest_batch(config, 512, 16 * gib) - 0.8 * 16 * gib / per_image) <= 1


def test_fast_pool_and_up_convolution_equal_flax_originals():
    from nucjax.models.unet import UpConv, max_pool_2x2

    x = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
    assert jnp.array_equal(max_pool_2x2(x), nnx.max_pool(x, (2, 2), strides=(2, 2)))
    up = UpConv(3, 5, nnx.Rngs(0))
    up.bias[...] = jnp.arange(5.0)
    reference = nnx.ConvTranspose(3, 5, (2, 2), strides=(2, 2), padding="SAME", rngs=nnx.Rngs(1))
    # Same weights: output block (dy, dx) is the flipped kernel's tap (1 - dy, 1 - dx).
    kernel = up.conv.kernel[...].reshape(3, 2, 2, 5).transpose(1, 2, 0, 3)
    reference.kernel[...] = kernel[::-1, ::-1]
    reference.bias[...] = up.bias[...]
    assert jnp.allclose(up(x), reference(x), atol=1e-5)

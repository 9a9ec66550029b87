"""Training batches drawn on the device (nucjax.batches): each augmentation
against its numpy reference on hand-made inputs, determinism, the
streaming fallback against the resident set, and training with them."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_experiment
from nucjax.augment import AugmentConfig, symmetry
from nucjax.batches import (
    Draws,
    batch_key,
    blur_matrix,
    choose_pipeline,
    draw_augmentation,
    elastic_displacement,
    epoch_order,
    group_weights,
    make_batch,
    pack,
    packed_bytes,
    render,
    shelf_layout,
)
from nucjax.inputs import Example, InputConfig, reflect_pad, training_examples
from nucjax.targets import targets

NO_AUGMENT = AugmentConfig(flips=False, elastic=0.0, brightness=0.0, contrast=0.0, recolour=0.0)
draw_batch = jax.jit(make_batch, static_argnums=(3, 4))


def hand_made(h=40, w=52, channels=1, seed=0):
    """An Example whose every pixel differs, and labels of a few rectangles."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    labels = np.zeros((h, w), np.int32)
    labels[3:15, 4:20], labels[15:30, 10:25], labels[20:38, 30:50] = 1, 2, 3
    return Example((image,), labels)


def still(batch, size, k=0, corner=(0, 0), zoom=1.0):
    """Draws that only crop at corner and apply symmetry k."""
    return Draws(variant=jnp.zeros(batch, jnp.int32), zoom=jnp.full(batch, zoom), corner=jnp.tile(jnp.asarray(corner, jnp.float32), (batch, 1)),
                 symmetry=jnp.full(batch, k, jnp.int32), displacement=jnp.zeros((batch, 2, size, size)),
                 gain=jnp.ones(batch), shift=jnp.zeros(batch))


@pytest.mark.parametrize("k", range(8))
def test_each_symmetry_is_the_numpy_one_exactly(k):
    example = hand_made(32, 32)
    data = pack([example])
    x, labels = render(data, jnp.zeros(1, jnp.int32), still(1, 32, k), InputConfig(size=32))
    np.testing.assert_array_equal(np.asarray(x[0] * 255).round(), symmetry(example.variants[0], k).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(labels[0]), symmetry(example.labels, k))


def test_a_crop_is_the_window_and_mirrors_past_the_edge():
    example = hand_made(40, 52)
    config = InputConfig(size=32)
    x, labels = render(pack([example]), jnp.zeros(1, jnp.int32), still(1, 32, corner=(5, 9)), config)
    np.testing.assert_array_equal(np.asarray(labels[0]), example.labels[5:37, 9:41])
    np.testing.assert_allclose(np.asarray(x[0]) * 255, example.variants[0][5:37, 9:41], atol=1e-3)
    small = hand_made(20, 24)
    x, labels = render(pack([small]), jnp.zeros(1, jnp.int32), still(1, 32), config)
    np.testing.assert_array_equal(np.asarray(labels[0]), reflect_pad(small.labels, 32, 32))  # numpy's 'symmetric'


def test_targets_of_moved_labels_are_the_moved_targets():
    example = hand_made(32, 32)
    data = pack([example])
    for k in range(8):
        _, labels = render(data, jnp.zeros(1, jnp.int32), still(1, 32, k), InputConfig(size=32))
        moved = np.asarray(targets(labels[0], border=True))
        expected = np.stack([symmetry(np.asarray(c), k) for c in np.moveaxis(np.asarray(targets(example.labels, True)), -1, 0)], -1)
        np.testing.assert_array_equal(moved, expected)


@pytest.mark.parametrize("sigma", [2.0, 6.0])
def test_the_elastic_blur_is_opencvs_gaussian_blur(sigma):
    noise = np.random.default_rng(0).uniform(-1, 1, (48, 48)).astype(np.float32)
    blur = blur_matrix(48, sigma)
    np.testing.assert_allclose(blur @ noise @ blur.T, cv2.GaussianBlur(noise, (0, 0), sigma), atol=1e-5)


def opencv_displacement(rng, size, alpha, sigma):
    """The reference: uniform noise blurred by OpenCV, largest component scaled to alpha."""
    dx, dy = (cv2.GaussianBlur(rng.uniform(-1, 1, (size, size)).astype(np.float32), (0, 0), sigma) for _ in range(2))
    return np.stack([dx, dy]) * alpha / max(np.abs(dx).max(), np.abs(dy).max())


def test_elastic_displacements_have_the_opencv_statistics():
    field = np.asarray(elastic_displacement(jax.random.key(0), 64, 64, alpha=8.0, sigma=6.0))
    assert field.shape == (64, 2, 64, 64)
    np.testing.assert_allclose(np.abs(field).max(axis=(1, 2, 3)), 8.0, rtol=1e-5)
    rng = np.random.default_rng(0)
    reference = np.stack([opencv_displacement(rng, 64, 8.0, 6.0) for _ in range(64)])
    for ours, theirs in ((np.abs(field).mean(), np.abs(reference).mean()), (field.std(), reference.std()),
                         (np.abs(np.diff(field, axis=-1)).mean(), np.abs(np.diff(reference, axis=-1)).mean())):
        assert abs(ours / theirs - 1) < 0.1


def test_elastic_is_drawn_with_its_probability_and_moves_input_and_labels_together():
    config = InputConfig(size=32)
    augment = AugmentConfig(flips=True, elastic=0.3, brightness=0.0, contrast=0.0)
    hw = jnp.full((4000, 2), 64)
    draws = draw_augmentation(jax.random.key(1), hw, jnp.ones(4000), config, augment)
    warped = np.abs(np.asarray(draws.displacement)).max(axis=(1, 2, 3)) > 0
    assert abs(warped.mean() - 0.3) < 0.03
    assert np.bincount(np.asarray(draws.symmetry), minlength=8).min() > 400  # all 8, evenly
    labels = np.zeros((64, 64), np.int32)
    labels[10:40, 12:44] = 1
    example = Example((((labels > 0) * 255).astype(np.uint8)[..., None],), labels)
    x, y = draw_batch(jax.random.key(2), pack([example]), jnp.zeros(8, jnp.int32), config, AugmentConfig(elastic=1.0, brightness=0, contrast=0))
    agreement = ((np.asarray(x)[..., 0] > 0.5) == (np.asarray(y)[..., 0] > 0)).mean()
    assert agreement > 0.97  # linear vs nearest interpolation differ only on edges


def test_warps_leave_no_black_border():
    example = Example((np.full((32, 32, 1), 255, np.uint8),), np.zeros((32, 32), np.int32))
    augment = AugmentConfig(elastic=1.0, elastic_alpha=12.0, brightness=0.0, contrast=0.0)
    x, _ = draw_batch(jax.random.key(3), pack([example]), jnp.zeros(8, jnp.int32), InputConfig(size=32, scale_jitter=0.25), augment)
    assert float(x.min()) > 0.99  # mirrored, never padded with zeros


def test_intensity_jitter_stays_in_its_range():
    example = Example((np.full((32, 32, 1), 128, np.uint8),), np.zeros((32, 32), np.int32))
    augment = AugmentConfig(flips=False, elastic=0.0, brightness=0.1, contrast=0.15)
    x, _ = draw_batch(jax.random.key(4), pack([example]), jnp.zeros(64, jnp.int32), InputConfig(size=32), augment)
    means = np.asarray(x).mean(axis=(1, 2, 3))
    assert np.all(np.abs(means - 128 / 255) <= 0.1 + 0.15 * 0.01 + 1e-5) and means.std() > 0.02


def test_batches_are_deterministic_from_the_key_and_differ_between_steps(tiny_samples):
    config = tiny_experiment()
    data = pack(training_examples(tiny_samples, "standard", config.inputs, config.augment))
    order = epoch_order(0, 1, 2, 4, len(tiny_samples))
    first = draw_batch(batch_key(0, 1, 0), data, order[0], config.inputs, config.augment)
    again = draw_batch(batch_key(0, 1, 0), data, order[0], config.inputs, config.augment)
    other = draw_batch(batch_key(0, 1, 1), data, order[0], config.inputs, config.augment)
    assert first[0].shape == (4, 32, 32, 1) and first[1].shape == (4, 32, 32, 2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(order, epoch_order(0, 2, 2, 4, len(tiny_samples)))


def test_recoloured_variants_are_both_drawn(tiny_samples):
    examples = training_examples(tiny_samples, "standard", InputConfig(size=32), AugmentConfig(recolour=1.0))
    assert all(len(e.variants) == 2 for e in examples)
    data = pack(examples)
    draws = draw_augmentation(jax.random.key(0), jnp.full((1000, 2), 64), jnp.asarray(data.examples[:, 6]).repeat(125), InputConfig(size=32), None)
    assert 0.4 < float(draws.variant.mean()) < 0.6


@pytest.mark.parametrize("model", ["standard", "extended"])
def test_the_streamed_batches_are_the_resident_ones(tiny_samples, model):
    from nucjax.train.loop import Batches

    config = tiny_experiment().replace(augment={"recolour": 0.5}, train={"batch_size": 3})
    if model == "extended":
        config = config.replace(model={"model": "extended"})
    examples = training_examples(tiny_samples, model, config.inputs, config.augment)
    resident = Batches(examples, config.replace(train={"pipeline": "resident"}))
    streamed = Batches(examples, config.replace(train={"pipeline": "streaming"}))
    assert (resident.mode, streamed.mode) == ("resident", "streaming")
    for (a, ia, ka), (b, ib, kb) in zip(resident.epoch(2, 4), streamed.epoch(2, 4), strict=True):
        xa, ya = draw_batch(ka, a, ia, config.inputs, config.augment)
        xb, yb = draw_batch(kb, b, ib, config.inputs, config.augment)
        np.testing.assert_array_equal(np.asarray(xa), np.asarray(xb))
        np.testing.assert_array_equal(np.asarray(ya), np.asarray(yb))


def test_shelves_hold_every_image_apart():
    shapes = [(40, 30), (10, 70), (25, 25), (40, 30), (5, 5)] * 3
    positions, planes, (h, w) = shelf_layout(shapes, side=80)
    boxes = np.zeros((planes, h, w), np.int32)
    for (p, top, left), (bh, bw) in zip(positions, shapes):
        boxes[p, top : top + bh, left : left + bw] += 1
    assert boxes.max() == 1 and boxes.sum() == sum(a * b for a, b in shapes)


def test_auto_streams_a_set_past_its_share_of_device_memory(tiny_samples):
    examples = training_examples(tiny_samples, "standard", InputConfig(size=32))
    nbytes = packed_bytes(examples)
    assert nbytes == pack(examples).nbytes
    assert choose_pipeline("auto", nbytes, device_bytes=10 * nbytes) == "resident"
    assert choose_pipeline("auto", nbytes, device_bytes=nbytes) == "streaming"
    with pytest.raises(ValueError, match="unknown pipeline"):
        choose_pipeline("disk", nbytes, nbytes)


def whole_object_diameters(body: np.ndarray) -> list[float]:
    """Equivalent diameters of the body's components that do not touch the crop's edge."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(body.astype(np.uint8), connectivity=8)
    h, w = body.shape
    inside = [i for i in range(1, n) if stats[i, 0] > 0 and stats[i, 1] > 0
              and stats[i, 0] + stats[i, 2] < w and stats[i, 1] + stats[i, 3] < h]
    return [2 * np.sqrt(stats[i, cv2.CC_STAT_AREA] / np.pi) for i in inside]


def lattice(diameter: int, side: int = 400) -> np.ndarray:
    labels = np.zeros((side, side), np.int32)
    yy, xx = np.mgrid[0:side, 0:side]
    step = int(diameter * 1.7)
    for label, (cy, cx) in enumerate(((y, x) for y in range(step // 2, side, step) for x in range(step // 2, side, step)), start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= (diameter / 2) ** 2] = label
    return labels


@pytest.mark.parametrize("jitter", [0.0, 0.25])
def test_crops_shrink_large_nuclei_to_the_canonical_diameter_and_keep_small_ones(jitter):
    from types import SimpleNamespace

    config = InputConfig(size=64, diameter=16.0, scale_jitter=jitter)
    for diameter, expected in ((48, 16), (10, 10)):  # 48 px nuclei are shrunk to 16; 10 px ones are never enlarged
        labels = lattice(diameter)
        image = np.repeat(((labels > 0) * 200).astype(np.uint8)[..., None], 3, axis=2)
        examples = training_examples([SimpleNamespace(image=image, labels=labels)], "standard", config)
        _, y = draw_batch(jax.random.key(diameter), pack(examples), jnp.zeros(16, jnp.int32), config, None)
        seen = [d for crop in np.asarray(y)[..., 0] for d in whole_object_diameters(crop > 0)]
        assert seen and abs(np.median(seen) - expected) <= 0.1 * expected


@pytest.mark.parametrize("balance", [0.0, 0.5, 1.0])
def test_balanced_draws_give_each_group_its_share(balance):
    groups = ["big"] * 80 + ["middle"] * 16 + ["small"] * 4
    weights = group_weights(groups, balance)
    order = epoch_order(0, 1, 500, 8, len(groups), weights)
    drawn = np.bincount(order.ravel(), minlength=len(groups))
    share = {g: drawn[[i for i, x in enumerate(groups) if x == g]].sum() / order.size for g in set(groups)}
    sizes = {"big": 80, "middle": 16, "small": 4}
    expected = {g: n ** (1 - balance) for g, n in sizes.items()}
    total = sum(expected.values())
    for g in sizes:
        assert share[g] == pytest.approx(expected[g] / total, abs=0.015)
    # Within a group every image is drawn alike, and a resumed epoch replays.
    assert np.array_equal(order, epoch_order(0, 1, 500, 8, len(groups), weights))
    assert drawn[:80].std() < 0.25 * drawn[:80].mean()


def test_the_blur_smooths_its_images_only_and_keeps_their_mean():
    from nucjax.batches import gaussian_blur

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 1, (3, 32, 32, 1)), jnp.float32)
    out = np.asarray(gaussian_blur(x, jnp.asarray([0.0, 1.0, 2.0])))
    np.testing.assert_array_equal(out[0], np.asarray(x[0]))  # sigma 0: untouched
    assert np.asarray(x[1]).std() > out[1].std() > out[2].std()  # more blur, less texture
    assert abs(out[2].mean() - float(x[2].mean())) < 0.01
    # A 1-px Gaussian matches OpenCV's away from the edges.
    reference = cv2.GaussianBlur(np.asarray(x[1, ..., 0]), (0, 0), 1.0)
    np.testing.assert_allclose(out[1, 8:-8, 8:-8, 0], reference[8:-8, 8:-8], atol=2e-3)


def test_pale_nuclei_keep_a_drawn_share_of_their_contrast_and_the_background_stays():
    from nucjax.batches import PALE_SLOTS, fade_nuclei

    labels = np.zeros((1, 16, 16), np.int32)
    labels[0, 2:6, 2:6], labels[0, 9:13, 9:13] = 3, 4
    x = jnp.asarray(np.where(labels[..., None] > 0, 0.9, 0.1), jnp.float32)
    share = jnp.ones((1, PALE_SLOTS)).at[0, 3].set(0.25)
    out = np.asarray(fade_nuclei(x, jnp.asarray(labels), share))[0, ..., 0]
    assert out[3, 3] == pytest.approx(0.1 + 0.8 * 0.25)  # faded towards the background's level
    assert out[10, 10] == pytest.approx(0.9) and out[0, 0] == pytest.approx(0.1)  # the others untouched


def test_gamma_and_pale_are_drawn_in_their_ranges_and_cost_nothing_when_off():
    config, hw = InputConfig(size=32), jnp.full((2000, 2), 64)
    augment = AugmentConfig(gamma=0.4, pale=0.3, pale_floor=0.25)
    draws = draw_augmentation(jax.random.key(5), hw, jnp.ones(2000), config, augment)
    gamma, share = np.asarray(draws.gamma), np.asarray(draws.pale)
    assert gamma.min() >= np.exp(-0.4) - 1e-6 and gamma.max() <= np.exp(0.4) + 1e-6 and gamma.std() > 0.1
    faded = share < 1
    assert abs(faded.mean() - 0.3) < 0.01 and share.min() >= 0.25
    off = draw_augmentation(jax.random.key(5), hw, jnp.ones(2000), config, AugmentConfig())
    assert off.gamma is None and off.pale is None
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(pale=1.5)
    # In a batch: pale nuclei are dimmer than the input's, never brighter, and the labels do not move.
    labels = np.zeros((64, 64), np.int32)
    labels[8:24, 8:24], labels[36:56, 30:50] = 1, 2
    example = Example((np.where(labels > 0, 230, 20).astype(np.uint8)[..., None],), labels)
    still = AugmentConfig(flips=False, elastic=0.0, brightness=0.0, contrast=0.0, recolour=0.0)
    plain_x, plain_y = draw_batch(jax.random.key(6), pack([example]), jnp.zeros(32, jnp.int32), config, still)
    pale_x, pale_y = draw_batch(jax.random.key(6), pack([example]), jnp.zeros(32, jnp.int32), config,
                                AugmentConfig(flips=False, elastic=0.0, brightness=0.0, contrast=0.0, recolour=0.0, pale=1.0))
    assert np.array_equal(plain_y, pale_y)
    nuclei = np.asarray(plain_y)[..., 0] > 0
    assert np.all(np.asarray(pale_x)[..., 0][nuclei] <= np.asarray(plain_x)[..., 0][nuclei] + 1e-6)
    assert np.asarray(pale_x)[..., 0][nuclei].mean() < np.asarray(plain_x)[..., 0][nuclei].mean() - 0.05


def test_grain_is_drawn_in_its_range_leaves_the_other_draws_and_the_labels_alone():
    config, hw = InputConfig(size=32), jnp.full((400, 2), 64)
    grainy = AugmentConfig(noise=0.5, noise_sigma=0.1)
    draws = draw_augmentation(jax.random.key(5), hw, jnp.ones(400), config, grainy)
    sigma = np.asarray(draws.noise).std(axis=(1, 2))
    assert abs((sigma > 0).mean() - 0.5) < 0.08 and sigma.max() <= 0.1 * 1.1 and sigma.max() > 0.08
    plain = draw_augmentation(jax.random.key(5), hw, jnp.ones(400), config, AugmentConfig())
    assert plain.noise is None
    for name in ("variant", "zoom", "corner", "symmetry", "gain", "shift"):  # turning grain on moves nothing else
        assert np.array_equal(np.asarray(getattr(draws, name)), np.asarray(getattr(plain, name)))
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(noise=2.0)
    labels = np.zeros((64, 64), np.int32)
    labels[8:24, 8:24] = 1
    example = Example((np.where(labels > 0, 180, 60).astype(np.uint8)[..., None],), labels)
    still = dict(flips=False, elastic=0.0, brightness=0.0, contrast=0.0, recolour=0.0)
    plain_x, plain_y = draw_batch(jax.random.key(6), pack([example]), jnp.zeros(8, jnp.int32), config, AugmentConfig(**still))
    grain_x, grain_y = draw_batch(jax.random.key(6), pack([example]), jnp.zeros(8, jnp.int32), config,
                                  AugmentConfig(**still, noise=1.0, noise_sigma=0.1))
    assert np.array_equal(plain_y, grain_y)
    difference = np.asarray(grain_x) - np.asarray(plain_x)
    assert 0.01 < difference.std() < 0.1 and abs(difference.mean()) < 0.01

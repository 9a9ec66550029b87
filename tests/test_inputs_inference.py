import numpy as np
import pytest

from nucjax.inference import padded_side, predict_image, predict_tiled
import nucjax.inputs
from nucjax.augment import AugmentConfig
from nucjax.inputs import InputConfig, cached_training_examples, model_inputs, reflect_pad, training_examples


def identity_forward(x):
    """A 'model' that returns its first input channel: tiling must give it back."""
    return x[..., :1]


@pytest.mark.parametrize("shape", [(30, 50), (256, 256), (300, 700), (520, 696)])
@pytest.mark.parametrize("whole_pixels", [10**9, 0])  # whole, or always tiled
def test_whole_or_tiled_prediction_reassembles_the_image_exactly(shape, whole_pixels):
    image = np.random.default_rng(0).random(shape + (2,)).astype(np.float32)
    seen = []

    def forward(x):
        seen.append(x.shape)
        return identity_forward(x)

    out = predict_tiled(forward, image, multiple=16, tile=128, whole_pixels=whole_pixels)
    assert out.shape == shape + (1,)
    assert np.array_equal(out[..., 0], image[..., 0])
    assert all(s[1] % 16 == 0 and s[2] % 16 == 0 for s in seen)
    if whole_pixels == 0:
        assert {s[1:3] for s in seen} == {(128, 128)}  # one tile shape: one compile
    else:
        assert len(seen) == 1


def test_padded_sides_divide_and_leave_margins():
    for side in (1, 31, 256, 360, 1388):
        padded = padded_side(side, 16)
        assert padded % 32 == 0 and padded >= side + 32
    assert padded_side(100, 64) % 64 == 0


def test_resize_mode_maps_back_to_the_original_size():
    yy, xx = np.mgrid[0:40, 0:70]
    inputs = (2 * yy + 2 * xx).astype(np.uint8)[..., None]  # smooth: survives a resize
    probs = predict_image(identity_forward, inputs, InputConfig(size=64, mode="resize"), multiple=16)
    assert probs.shape == (40, 70, 1)
    assert np.abs(probs[..., 0] - inputs[..., 0] / 255).max() < 0.02


def test_model_inputs_channels(tiny_samples):
    image = tiny_samples[0].image
    assert model_inputs(image, "standard").shape == image.shape[:2] + (1,)
    extended = model_inputs(image, "extended")
    assert extended.shape == image.shape[:2] + (5,)
    assert set(np.unique(extended[..., 1])) <= {0, 255}  # the adaptive threshold
    assert np.array_equal(extended[..., 2:], image)


def test_reflect_pad_mirrors_and_places_the_image():
    a = np.arange(6).reshape(2, 3)
    padded = reflect_pad(a, 5, 7, top=1, left=2)
    assert padded.shape == (5, 7)
    assert np.array_equal(padded[1:3, 2:5], a)
    assert reflect_pad(np.ones((1, 1)), 4, 4).shape == (4, 4)


@pytest.mark.parametrize("mode", ["crop", "resize"])
def test_training_examples_are_resized_once(tiny_samples, mode):
    config = InputConfig(size=32, mode=mode, border=True)
    examples = training_examples(tiny_samples, "extended", config)
    for example, sample in zip(examples, tiny_samples):
        x, labels = example.variants[0], example.labels
        assert x.dtype == np.uint8 and x.shape[2] == 5 and labels.dtype == np.int32
        if mode == "resize":
            assert x.shape[:2] == labels.shape == (32, 32)
        else:  # shrunk to the canonical diameter, never enlarged
            assert x.shape[:2] == labels.shape and labels.shape[0] <= sample.labels.shape[0]


def test_prepared_examples_are_kept_and_read_back_identical(tmp_path, tiny_samples, monkeypatch):
    """A search trial restarted after a pause reads its examples instead of preparing them again."""
    config, augment = InputConfig(size=32), AugmentConfig(recolour=0.5)
    made = cached_training_examples(tmp_path, tiny_samples, "extended", config, augment, seed=3)
    assert len(list(tmp_path.glob("examples-*.npz"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr(nucjax.inputs, "training_examples", refuse)
    read = cached_training_examples(tmp_path, tiny_samples, "extended", config, augment, seed=3)
    assert len(read) == len(made) and any(len(e.variants) == 2 for e in read)
    for a, b in zip(made, read):
        assert np.array_equal(a.labels, b.labels) and len(a.variants) == len(b.variants)
        assert all(np.array_equal(x, y) for x, y in zip(a.variants, b.variants))
    # Other inputs, another file: nothing stale is read.
    with pytest.raises(AssertionError, match="prepared again"):
        cached_training_examples(tmp_path, tiny_samples, "extended", InputConfig(size=32, diameter=config.diameter + 4), augment, seed=3)

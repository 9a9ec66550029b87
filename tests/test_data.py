import shutil

import cv2
import numpy as np
import pytest

from conftest import REAL_ROOT, TINY, needs_real, real_ids
from nucjax.data import (
    KINDS,
    DataError,
    Sample,
    SyntheticConfig,
    generate,
    image_kind,
    load_dataset,
    read_image,
    read_rle_csv,
    stratified_split,
    write_kaggle_sample,
)
from nucjax.data.kaggle import paint_labels
from nucjax.rle import rle_encode


@pytest.fixture
def root(tmp_path, tiny_root):
    """A private copy of the tiny set, for tests that break it."""
    copy = tmp_path / "data"
    shutil.copytree(tiny_root, copy)
    return copy


def first_sample_dir(root):
    return sorted(p for p in root.iterdir() if p.is_dir())[0]


def test_loader_reads_back_what_the_generator_wrote(tiny_root, tiny_samples):
    dataset = load_dataset(tiny_root)
    assert dataset.skipped == ()
    written = {s.image_id: s for s in tiny_samples}
    assert sorted(dataset.image_ids) == sorted(written)
    for sample in dataset.samples:
        assert sample.image.dtype == np.uint8 and sample.image.shape[2] == 3
        assert sample.labels.dtype == np.int32
        assert np.array_equal(sample.image, written[sample.image_id].image)
        assert np.array_equal(sample.labels, written[sample.image_id].labels)
        assert np.array_equal(sample.full_mask, sample.labels > 0)


@pytest.mark.parametrize("flag, convert", [(cv2.IMREAD_GRAYSCALE, None), ("rgb", cv2.COLOR_RGB2BGR)])
def test_grey_and_rgb_pngs(tmp_path, flag, convert):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    if convert is None:
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
        cv2.imwrite(str(tmp_path / "x.png"), rgb[..., 0])
    else:
        cv2.imwrite(str(tmp_path / "x.png"), cv2.cvtColor(rgb, convert))
    assert np.array_equal(read_image(tmp_path / "x.png"), rgb)


def test_sixteen_bit_png_is_scaled_to_eight(tmp_path):
    grey16 = np.array([[0, 257 * 100], [65535, 257 * 3]], np.uint16)
    cv2.imwrite(str(tmp_path / "x.png"), grey16)
    assert read_image(tmp_path / "x.png")[..., 0].tolist() == [[0, 100], [255, 3]]


def test_overlap_goes_to_the_smaller_nucleus():
    big = np.arange(0, 20)  # flat pixels 0..19
    small = np.array([18, 19, 20])
    labels = paint_labels([big, small], (5, 5)).ravel()
    assert labels[18] == labels[19] == 2 and labels[17] == 1
    # The order of the files does not change who wins.
    labels = paint_labels([small, big], (5, 5)).ravel()
    assert labels[18] == labels[19] == 1 and labels[17] == 2


def test_a_covered_object_leaves_no_gap():
    # The third object ties with the first for both its pixels and loses them.
    labels = paint_labels([np.array([0, 1]), np.array([0, 1, 2, 3]), np.array([0, 1])], (3, 3))
    assert labels.ravel().tolist() == [1, 1, 2, 2, 0, 0, 0, 0, 0]
    labels = paint_labels([np.array([0, 1]), np.array([0, 1, 2, 3]), np.array([0, 1])], (2, 2))
    assert labels.ravel().tolist() == [1, 1, 2, 2]


def test_plain_folder_of_images(tmp_path, tiny_samples):
    for sample in tiny_samples[:3]:
        cv2.imwrite(str(tmp_path / f"{sample.image_id[:6]}.tif"), sample.image[..., ::-1])
    dataset = load_dataset(tmp_path, labelled=None)
    assert len(dataset) == 3 and all(s.labels is None for s in dataset.samples)
    with pytest.raises(DataError, match="no sample could be loaded"):
        load_dataset(tmp_path, labelled=True)


def test_missing_root_is_fatal(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(tmp_path / "nowhere")


def test_folder_without_images_is_fatal(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no image found"):
        load_dataset(tmp_path)


def test_missing_images_folder_skips_the_sample(root):
    broken = first_sample_dir(root)
    shutil.rmtree(broken / "images")
    dataset = load_dataset(root)
    assert len(dataset) == TINY.n_images - 1
    assert any(broken.name in s.path and "no images/ folder" in s.reason for s in dataset.skipped)
    with pytest.raises(DataError, match="strict"):
        load_dataset(root, strict=True)


def test_missing_masks_folder_skips_only_when_labels_are_needed(root):
    broken = first_sample_dir(root)
    shutil.rmtree(broken / "masks")
    assert broken.name not in load_dataset(root).image_ids
    assert any("no masks/ folder" in s.reason for s in load_dataset(root).skipped)
    assert broken.name in load_dataset(root, labelled=False).image_ids
    kept = {s.image_id: s for s in load_dataset(root, labelled=None).samples}
    assert kept[broken.name].labels is None


def test_empty_masks_folder_skips_the_sample(root):
    broken = first_sample_dir(root)
    for mask in (broken / "masks").iterdir():
        mask.unlink()
    dataset = load_dataset(root)
    assert broken.name not in dataset.image_ids
    assert any("no mask in the masks/ folder" in s.reason for s in dataset.skipped)


@pytest.mark.parametrize("where", ["images", "masks"])
def test_truncated_png_skips_the_sample_and_names_the_file(root, where):
    broken = first_sample_dir(root)
    victim = sorted((broken / where).iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])
    dataset = load_dataset(root)
    assert broken.name not in dataset.image_ids
    assert len(dataset) == TINY.n_images - 1
    assert any(victim.name in s.reason and "truncated or corrupt" in s.reason for s in dataset.skipped)


def test_mask_of_another_size_skips_the_sample(root):
    broken = first_sample_dir(root)
    victim = sorted((broken / "masks").iterdir())[0]
    cv2.imwrite(str(victim), np.full((3, 3), 255, np.uint8))
    dataset = load_dataset(root)
    assert broken.name not in dataset.image_ids
    assert any(victim.name in s.reason and "mask is 3x3" in s.reason for s in dataset.skipped)


def test_stray_files_are_ignored_with_a_note(root):
    broken = first_sample_dir(root)
    (broken / "masks" / "Thumbs.db").write_bytes(b"junk")
    (root / "stage1_train_labels.csv").write_text("ImageId,EncodedPixels\n")
    (root / ".DS_Store").write_bytes(b"junk")
    dataset = load_dataset(root)
    assert len(dataset) == TINY.n_images
    noted = " ".join(s.path for s in dataset.skipped)
    assert "Thumbs.db" in noted and "stage1_train_labels.csv" in noted and ".DS_Store" not in noted
    labels = {s.image_id: s.labels for s in dataset.samples}[broken.name]
    assert labels.max() == len([p for p in (broken / "masks").iterdir() if p.suffix == ".png"])


def test_empty_mask_file_is_ignored_with_a_note(root):
    broken = first_sample_dir(root)
    shape = read_image(next((broken / "images").iterdir())).shape[:2]
    cv2.imwrite(str(broken / "masks" / "zzzz-empty.png"), np.zeros(shape, np.uint8))
    dataset = load_dataset(root)
    assert broken.name in dataset.image_ids
    assert any("zzzz-empty.png" in s.path and "no foreground" in s.reason for s in dataset.skipped)


def write_rle_csv(path, rows, header="ImageId,EncodedPixels"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")


def test_rle_csv_with_sizes_from_images(tmp_path, tiny_samples):
    sample = tiny_samples[0]
    rows = [(sample.image_id, rle_encode(sample.labels == i)) for i in range(1, sample.labels.max() + 1)]
    write_rle_csv(tmp_path / "labels.csv", rows)
    labels = read_rle_csv(tmp_path / "labels.csv", {sample.image_id: sample.labels.shape})
    assert np.array_equal(labels[sample.image_id], sample.labels)
    with pytest.raises(DataError, match="no Height/Width"):
        read_rle_csv(tmp_path / "labels.csv")


def test_solution_csv_with_height_width_and_an_empty_image(tmp_path):
    write_rle_csv(
        tmp_path / "solution.csv",
        [("a", "1 2", 3, 4, "Public"), ("a", "7 2", 3, 4, "Public"), ("b", "", 2, 2, "Private")],
        header="ImageId,EncodedPixels,Height,Width,Usage",
    )
    labels = read_rle_csv(tmp_path / "solution.csv")
    assert labels["a"].shape == (3, 4) and labels["a"].max() == 2
    assert labels["a"][:2, 0].tolist() == [1, 1] and labels["a"][0, 2] == 2
    assert labels["b"].max() == 0


@pytest.mark.parametrize(
    "rows, message",
    [
        ([("a", "1 2 3", 3, 4)], "row 2: odd number"),
        ([("a", "1 2", 3, 4), ("a", "11 5", 3, 4)], "row 3: run ends at pixel 15"),
        ([("a", "1 2", 3, 4), ("a", "5 1", 4, 4)], "row 3: a is"),
    ],
)
def test_bad_rle_csv_names_the_row(tmp_path, rows, message):
    write_rle_csv(tmp_path / "s.csv", rows, header="ImageId,EncodedPixels,Height,Width")
    with pytest.raises(DataError, match=message):
        read_rle_csv(tmp_path / "s.csv")


def test_rle_csv_bad_header(tmp_path):
    (tmp_path / "s.csv").write_text("Id,Pixels\nx,1 2\n")
    with pytest.raises(DataError, match="row 1.*lacks ImageId, EncodedPixels"):
        read_rle_csv(tmp_path / "s.csv")


def test_image_kinds_of_the_synthetic_set(tiny_samples):
    kinds = [image_kind(s.image) for s in tiny_samples]
    assert set(kinds) == set(KINDS)


def test_stratified_split_is_fixed_and_keeps_every_kind_in_validation():
    ids = [f"img{i:03d}" for i in range(100)]
    kinds = ["fluorescence"] * 80 + ["brightfield"] * 3 + ["histology"] * 17
    split = stratified_split(ids, kinds, val_fraction=0.2, test_fraction=0.1, seed=3)
    assert split == stratified_split(list(reversed(ids)), list(reversed(kinds)), 0.2, 0.1, seed=3)
    assert sorted(split.train + split.val + split.test) == ids
    kind_of = dict(zip(ids, kinds))
    val_kinds = [kind_of[i] for i in split.val]
    assert val_kinds.count("fluorescence") == 16 and val_kinds.count("histology") == 3
    assert val_kinds.count("brightfield") == 1
    assert len(split.test) == 8 + 0 + 2
    assert split != stratified_split(ids, kinds, 0.2, 0.1, seed=4)
    assert split.part_of(split.val[0]) == "val"


def test_split_samples_returns_the_samples_of_each_part(tiny_samples):
    from nucjax.data import split_samples

    train, val, test = split_samples(tiny_samples, 0.3, 0.2, seed=5)
    expected = stratified_split([s.image_id for s in tiny_samples], [image_kind(s.image) for s in tiny_samples], 0.3, 0.2, seed=5)
    assert tuple(sorted(s.image_id for s in train)) == expected.train
    assert tuple(sorted(s.image_id for s in val)) == expected.val and expected.val
    assert tuple(sorted(s.image_id for s in test)) == expected.test and expected.test


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        stratified_split(["a"], ["fluorescence"], val_fraction=0.7, test_fraction=0.4)


def test_synthetic_is_deterministic_and_varied():
    config = SyntheticConfig(n_images=6, seed=11, sizes=((64, 64), (48, 96)), size_weights=(1, 1))
    first, second = list(generate(config)), list(generate(config))
    for a, b in zip(first, second):
        assert a.image_id == b.image_id
        assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert {s.image.shape[:2] for s in first} == {(64, 64), (48, 96)}
    other = next(generate(SyntheticConfig(n_images=6, seed=12, sizes=config.sizes, size_weights=(1, 1))))
    assert not np.array_equal(other.image, first[0].image) or other.image.shape != first[0].image.shape


def test_synthetic_default_sizes_kinds_and_instances():
    config = SyntheticConfig(n_images=20, seed=1)
    samples = list(generate(config))
    kinds = [image_kind(s.image) for s in samples]
    assert kinds.count("fluorescence") > kinds.count("histology") >= 1 and "brightfield" in kinds
    for s in samples:
        assert s.image.shape[:2] in config.sizes
        n = int(s.labels.max())
        assert n >= 1 and np.array_equal(np.unique(s.labels), np.arange(n + 1))
        # Every nucleus is one 4-connected piece.
        for label in range(1, n + 1, max(1, n // 5)):
            pieces, _ = cv2.connectedComponents((s.labels == label).astype(np.uint8), connectivity=4)
            assert pieces == 2
    # Clusters make nuclei touch: some label borders another label somewhere.
    touching = sum(bool(((s.labels[:, 1:] != s.labels[:, :-1]) & (s.labels[:, 1:] > 0) & (s.labels[:, :-1] > 0)).any()) for s in samples)
    assert touching >= 5


def test_synthetic_config_refuses_nonsense():
    with pytest.raises(ValueError):
        SyntheticConfig(n_images=0)
    with pytest.raises(ValueError):
        SyntheticConfig(sizes=((8, 8),), size_weights=(1,))


@needs_real
def test_real_images_load_with_labels():
    ids = real_ids(4)
    dataset = load_dataset(REAL_ROOT, ids=ids, strict=True)
    assert list(dataset.image_ids) == ids
    for sample in dataset.samples:
        masks = sorted((REAL_ROOT / sample.image_id / "masks").iterdir())
        assert sample.labels.max() == len(masks)
        first = read_image(masks[0])[..., 0] > 0
        assert (sample.labels[first] == 1).mean() > 0.95
        assert image_kind(sample.image) in KINDS


def test_write_refuses_an_unlabelled_sample(tmp_path):
    with pytest.raises(ValueError, match="no labels"):
        write_kaggle_sample(Sample("x", np.zeros((4, 4, 3), np.uint8)), tmp_path)


@needs_real
def test_real_labels_round_trip_through_a_train_labels_csv(tmp_path):
    from nucjax.submission import submission_rows

    dataset = load_dataset(REAL_ROOT, ids=real_ids(2), strict=True)
    rows = [row for s in dataset.samples for row in submission_rows(s.image_id, s.labels)]
    write_rle_csv(tmp_path / "stage1_train_labels.csv", rows)
    labels = read_rle_csv(tmp_path / "stage1_train_labels.csv", {s.image_id: s.labels.shape for s in dataset.samples})
    for sample in dataset.samples:
        assert np.array_equal(labels[sample.image_id], sample.labels)


def test_the_group_split_never_puts_one_group_on_both_sides():
    from nucjax.data import group_split

    rng = np.random.default_rng(0)
    ids = [f"img{i:03d}" for i in range(120)]
    kinds = ["fluorescence" if i < 90 else "histology" for i in range(120)]
    groups = {i: f"{k}-{int(rng.integers(0, 9 if k == 'fluorescence' else 4))}" for i, k in zip(ids, kinds)}
    for seed in range(5):
        split = group_split(ids, kinds, groups, val_fraction=0.2, test_fraction=0.1, seed=seed)
        sides = {}
        for part in ("train", "val", "test"):
            for image_id in getattr(split, part):
                sides.setdefault(groups[image_id], set()).add(part)
        assert all(len(parts) == 1 for parts in sides.values())
        assert sorted(split.train + split.val + split.test) == ids
        assert {kinds[ids.index(i)] for i in split.val} == {"fluorescence", "histology"}  # every kind with 2+ groups validates
    single = group_split(["a", "b"], ["brightfield"] * 2, {"a": "g", "b": "g"}, 0.5)
    assert single.val == () and single.train == ("a", "b")  # one group cannot be held out from itself


def test_acquisition_groups_tell_experiments_of_one_size_apart_by_look():
    from nucjax.data import acquisition_groups

    rng = np.random.default_rng(1)
    dim = [np.full((32, 32, 3), 20 + int(rng.integers(0, 4)), np.uint8) for _ in range(3)]
    bright = [np.full((32, 32, 3), 120 + int(rng.integers(0, 4)), np.uint8) for _ in range(3)]
    other_size = [np.full((40, 32, 3), 21, np.uint8)]
    groups = acquisition_groups([f"i{k}" for k in range(7)], dim + bright + other_size)
    assert len({groups[f"i{k}"] for k in range(3)}) == 1 and len({groups[f"i{k}"] for k in range(3, 6)}) == 1
    assert groups["i0"] != groups["i3"] and groups["i6"] not in (groups["i0"], groups["i3"])
    assert groups["i6"].startswith("fluorescence-40x32-")

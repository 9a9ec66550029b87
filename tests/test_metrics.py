import numpy as np
import pytest

from nucjax.metrics import (
    IOU_THRESHOLDS,
    compact_labels,
    full_mask_score,
    image_score,
    iou_matrix,
    kaggle_score,
)


def naive_image_score(truth, pred):
    """An independent, slow reading of Kaggle's rule: every pair compared."""
    t_ids = [i for i in np.unique(truth) if i]
    p_ids = [i for i in np.unique(pred) if i]
    if not t_ids and not p_ids:
        return 1.0
    scores = []
    for threshold in np.arange(0.5, 1.0, 0.05):
        hits = set()
        for a in t_ids:
            for b in p_ids:
                inter = np.sum((truth == a) & (pred == b))
                union = np.sum((truth == a) | (pred == b))
                if inter / union > threshold + 1e-12:
                    hits.add((a, b))
        tp = len(hits)
        scores.append(tp / (tp + (len(p_ids) - tp) + (len(t_ids) - tp)))
    return float(np.mean(scores))


def discs(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (y, x) in enumerate(centres, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = i
    return labels


def test_thresholds_are_kaggles():
    assert IOU_THRESHOLDS.tolist() == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


def test_perfect_prediction_scores_one():
    truth = discs((40, 40), [(10, 10), (28, 28)], 5)
    assert image_score(truth, truth).score == 1.0
    # Label ids do not matter, only the objects.
    assert image_score(truth, np.where(truth > 0, 7 - truth, 0)).score == 1.0


def test_empty_prediction_scores_zero():
    truth = discs((40, 40), [(10, 10)], 5)
    assert image_score(truth, np.zeros_like(truth)).score == 0.0


def test_both_empty_scores_one():
    empty = np.zeros((8, 8), np.int32)
    assert image_score(empty, empty).score == 1.0


def test_split_nucleus():
    truth = np.zeros((10, 10), np.int32)
    truth[:, :6] = 1  # one nucleus of 60 px
    pred = np.zeros_like(truth)
    pred[:, :4] = 1  # IoU 40/60 = 0.667: a hit up to threshold 0.65
    pred[:, 4:6] = 2  # a false positive everywhere
    # thresholds 0.5..0.65: TP 1, FP 1 -> 1/2; 0.7..0.95: TP 0, FP 2, FN 1 -> 0
    assert image_score(truth, pred).score == pytest.approx(4 * 0.5 / 10)


def test_merged_pair():
    truth = np.zeros((10, 10), np.int32)
    truth[:, :5] = 1
    truth[:, 5:] = 2
    pred = (truth > 0).astype(np.int32)  # IoU 0.5 with each: never strictly above
    score = image_score(truth, pred)
    assert score.score == 0.0
    assert (score.n_true, score.n_pred) == (2, 1)


def test_iou_exactly_at_a_threshold_is_a_miss():
    truth = np.zeros((4, 10), np.int32)
    truth[:, :10] = 1  # 40 px
    pred = np.zeros_like(truth)
    pred[:, :6] = 1  # IoU 24/40 = 0.6 exactly
    # Hits at 0.50 and 0.55 only: 2 of 10 thresholds.
    assert image_score(truth, pred).score == pytest.approx(0.2)
    assert image_score(truth, pred).tp[:3] == (1, 1, 0)


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_the_naive_reading(seed):
    rng = np.random.default_rng(seed)
    truth = discs((48, 48), rng.integers(5, 43, (6, 2)), 5)
    pred = discs((48, 48), rng.integers(5, 43, (6, 2)), int(rng.integers(3, 7)))
    pred[rng.random(pred.shape) < 0.05] = 0
    assert image_score(truth, pred).score == pytest.approx(naive_image_score(truth, pred), abs=1e-12)


def test_sparse_label_ids_are_compacted():
    labels = np.array([[0, 65535], [3, 3]])
    compact, areas = compact_labels(labels)
    assert compact.tolist() == [0, 2, 1, 1]
    assert areas.tolist() == [1, 2, 1]
    assert iou_matrix(labels, labels).shape == (2, 2)
    assert image_score(labels, labels).score == 1.0


def test_negative_or_float_labels_are_refused():
    with pytest.raises(ValueError, match="negative"):
        image_score(np.array([[-1, 0]]), np.zeros((1, 2), int))
    with pytest.raises(ValueError, match="integers"):
        image_score(np.zeros((1, 2)), np.zeros((1, 2), int))


def test_kaggle_score_is_the_mean_over_images():
    truth = discs((20, 20), [(10, 10)], 4)
    assert kaggle_score([truth, truth], [truth, np.zeros_like(truth)]) == 0.5
    with pytest.raises(ValueError):
        kaggle_score([], [])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        image_score(np.zeros((3, 3), int), np.zeros((3, 4), int))


def test_full_mask_score_ignores_the_split():
    truth = np.zeros((10, 10), np.int32)
    truth[:, :5] = 1
    truth[:, 5:] = 2
    assert full_mask_score(truth, (truth > 0).astype(int)) == 1.0
    half = np.zeros_like(truth)
    half[:, :7] = 1  # IoU 0.7: above 0.50..0.65 only
    assert full_mask_score(truth, half) == pytest.approx(0.4)


def test_a_paired_gain_within_the_noise_is_not_significant():
    from nucjax.metrics import paired_gain

    rng = np.random.default_rng(1)
    old = rng.uniform(0, 1, 80)
    assert not paired_gain(old, old).significant
    assert not paired_gain(old + rng.normal(0, 0.1, 80), old).significant
    clear = paired_gain(old + 0.05 + rng.normal(0, 0.02, 80), old)
    assert clear.significant and clear.low < clear.mean < clear.high
    assert paired_gain(old + 0.05, old) == paired_gain(old + 0.05, old)  # deterministic
    with pytest.raises(ValueError):
        paired_gain([], [])

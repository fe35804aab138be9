import numpy as np
import pytest

from mmctr.metrics import log_loss, roc_auc


def brute_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.3 * y, 1)  # many ties
    assert roc_auc(y, s) == pytest.approx(brute_auc(y, s), abs=1e-12)
    assert roc_auc(y, -s) == pytest.approx(1 - brute_auc(y, s), abs=1e-12)


def test_auc_needs_both_classes():
    with pytest.raises(ValueError):
        roc_auc([1, 1], [0.2, 0.3])


def test_log_loss():
    assert log_loss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_metrics_refuse_non_finite_scores(bad):
    from mmctr.errors import KitError

    y = np.array([0, 1, 0, 1, 1])
    s = np.array([0.1, 0.9, 0.2, bad, 0.7])
    with pytest.raises(KitError, match=r"1 of 5 scores are NaN or infinite \(first at index 3"):
        roc_auc(y, s)
    with pytest.raises(KitError, match=r"probabilities are NaN or infinite \(first at index 3"):
        log_loss(y, s)
    with pytest.raises(KitError, match=r"labels are NaN or infinite \(first at index 3"):
        roc_auc(s, y)
    with pytest.raises(KitError, match=r"labels are NaN or infinite"):
        log_loss(s, y)


def test_metrics_single_class_and_bad_labels_are_clear():
    from mmctr.errors import KitError

    with pytest.raises(KitError, match="all 3 labels are positive"):
        roc_auc([1, 1, 1], [0.2, 0.3, 0.4])
    with pytest.raises(KitError, match="all 2 labels are negative"):
        roc_auc([0, 0], [0.2, 0.3])
    with pytest.raises(KitError, match=r"labels must be 0 or 1: 1 are not \(first at index 1: 2.0\)"):
        roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(KitError, match=r"probabilities must be in \[0, 1\]"):
        log_loss([0, 1], [0.2, 1.5])
    with pytest.raises(KitError, match="empty input"):
        roc_auc([], [])
    with pytest.raises(KitError, match="labels and scores must be numbers"):
        roc_auc([0, 1], ["a", "0.3"])

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

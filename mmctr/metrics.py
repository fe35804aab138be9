"""AUC and log loss: scikit-learn's roc_auc_score and log_loss (what scorers use), behind the
kit's own input checks. Both refuse what would make the number meaningless (NaN/inf scores, non-0/1 labels, one class)
with a MetricError, so a diverged model can never report "AUC 0.54".
"""
from __future__ import annotations

import numpy as np

from .errors import KitError


class MetricError(KitError, ValueError):
    """Inputs a metric cannot score; a KitError (one line) and a ValueError (old callers)."""


def _inputs(labels, scores, what: str) -> tuple:
    try:
        y = np.asarray(labels, dtype=np.float64).ravel()
        s = np.asarray(scores, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise MetricError(f"labels and {what} must be numbers ({exc})") from None
    if y.shape != s.shape:
        raise MetricError(f"labels and {what} differ in length: {y.size} vs {s.size}")
    if y.size == 0:
        raise MetricError(f"no labels and {what} to score (empty input)")
    for name, v in (("labels", y), (what, s)):
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise MetricError(f"{bad.size} of {v.size} {name} are NaN or infinite (first at index "
                              f"{bad[0]}: {v[bad[0]]}); a diverged model or corrupt input cannot be scored")
    bad = np.flatnonzero((y != 0) & (y != 1))
    if bad.size:
        raise MetricError(f"labels must be 0 or 1: {bad.size} are not (first at index {bad[0]}: {y[bad[0]]})")
    return y, s


def roc_auc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    y, s = _inputs(labels, scores, "scores")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        only = "positive (1)" if n_pos else "negative (0)"
        raise MetricError(f"AUC needs both positive and negative labels: all {y.size} labels are {only}")
    return float(roc_auc_score(y, s))


def log_loss(labels, probs, eps: float = 1e-7) -> float:
    from sklearn.metrics import log_loss as sk_log_loss

    y, p = _inputs(labels, probs, "probabilities")
    bad = np.flatnonzero((p < 0) | (p > 1))
    if bad.size:
        raise MetricError(f"probabilities must be in [0, 1]: {bad.size} are not "
                          f"(first at index {bad[0]}: {p[bad[0]]})")
    return float(sk_log_loss(y, np.clip(p, eps, 1 - eps), labels=[0, 1]))

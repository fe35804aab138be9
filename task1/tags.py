"""item_tags -> dense vectors: TF-IDF bag of tags, truncated SVD."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .linalg import truncated_svd


def tag_embeddings(tags: np.ndarray, dim: int, seed: int):
    """tags: (n+1, 5) int >= 0, 0 = padding. Returns (emb (n+1, dim) float32, has_tags mask,
    explained, distinct tags). Tag ids are renumbered to the distinct ones present, so memory
    follows the vocabulary actually used, never the largest id."""
    n1 = len(tags)
    rows = np.repeat(np.arange(n1), tags.shape[1])
    vals = tags.ravel()
    keep = (vals > 0) & (rows > 0)
    rows, vals = rows[keep], vals[keep]
    vocab, cols = np.unique(vals, return_inverse=True)
    x = sp.csr_matrix((np.ones(len(cols), np.float64), (rows, cols)), shape=(n1, max(len(vocab), 1)))
    x.data[:] = 1.0  # a tag repeated within one item counts once
    has = np.asarray(x.sum(axis=1)).ravel() > 0
    df = np.asarray((x > 0).sum(axis=0)).ravel()
    idf = np.log((1 + has.sum()) / (1 + df)) + 1.0
    x = x @ sp.diags(idf)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x
    emb, explained = truncated_svd(x, dim, seed)
    emb[~has] = 0
    return emb, has, explained, int(len(vocab))

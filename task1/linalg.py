"""Deterministic truncated SVD of a scipy sparse matrix, in torch."""
from __future__ import annotations

import numpy as np
import torch


def truncated_svd(mat, k: int, seed: int, niter: int = 6):
    """(U * sqrt(S) as float32 (n, k), explained fraction of the squared Frobenius norm).

    Uses torch.svd_lowrank under a fixed seed; column signs are fixed so that each column's
    largest-magnitude entry is positive (identical results run to run)."""
    mat = mat.tocoo()
    n, m = mat.shape
    k_eff = max(1, min(k, n - 1, m - 1))
    if mat.nnz == 0:
        return np.zeros((n, k), dtype=np.float32), 0.0
    t = torch.sparse_coo_tensor(np.vstack([mat.row, mat.col]), mat.data.astype(np.float32),
                                (n, m), check_invariants=False).coalesce()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u, s, _ = torch.svd_lowrank(t, q=min(k_eff + 10, min(n, m)), niter=niter)
    u, s = u[:, :k_eff], s[:k_eff]
    signs = torch.sign(u.gather(0, u.abs().argmax(0, keepdim=True)))
    signs[signs == 0] = 1
    emb = (u * signs * s.sqrt()).numpy().astype(np.float32)
    total = float((mat.data.astype(np.float64) ** 2).sum())
    explained = float((s.double() ** 2).sum()) / total if total > 0 else 0.0
    if k_eff < k:
        emb = np.pad(emb, ((0, 0), (0, k - k_eff)))
    return emb, explained

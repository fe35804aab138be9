"""Deterministic randomized truncated SVD of a scipy sparse matrix (float32 sparse products)."""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

OVERSAMPLE = 10  # extra sketch columns beyond k (Halko et al.)


@contextmanager
def blas_threads():
    """numpy's BLAS/LAPACK limited to torch's thread count (task1 build sets it from
    runtime.num_threads): OpenBLAS otherwise starts one thread per core, and on a loaded machine
    its spinning threads made a QR 5x slower than one thread (measured on 2 shared cores)."""
    with threadpool_limits(limits=max(1, torch.get_num_threads()), user_api="blas"):
        yield


def _csr_torch(mat: sp.csr_matrix):
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is not
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(mat.indptr), torch.from_numpy(mat.indices),
                                       torch.from_numpy(mat.data), size=mat.shape, check_invariants=False)


class _Sparse:
    """A float32 CSR for `@ dense`: torch's CSR product (MKL, torch's threads) where it can take the
    indices, 20% less CPU than scipy's single-threaded one (92k x 92k, 20M entries, 74 columns)
    and the same sums row by row; scipy otherwise."""

    def __init__(self, mat: sp.csr_matrix):
        self.shape = mat.shape
        self.scipy = mat
        self.torch = _csr_torch(mat) if mat.indptr.dtype == mat.indices.dtype else None

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        if self.torch is None:
            return self.scipy @ x
        return (self.torch @ torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def eigh_desc(a: np.ndarray):
    """Eigenpairs of a symmetric matrix, largest eigenvalue first: (values, vectors as columns)."""
    vals, vecs = np.linalg.eigh(a)
    order = np.argsort(vals)[::-1]
    return vals[order], vecs[:, order]


def _orth(y: np.ndarray) -> np.ndarray:
    # torch's (MKL) QR: 4x faster than numpy's on a 92k x 74 float32 block (0.3 vs 1.25 s), on one
    # thread: a second one gains little on so thin a block, and on 2 shared cores (load 8) the tags
    # SVD's QRs took 11 s CPU with two threads against 1.2 s with one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.qr(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)))[0].numpy()
    finally:
        torch.set_num_threads(threads)


def _range(mat, mat_t, k: int, q: int, seed: int, niter: int, symmetric: bool) -> np.ndarray:
    """Orthonormal (n, q) basis of the top-q range of `mat` by subspace iteration: each iteration is
    one sparse product when the matrix is symmetric, two (mat_t then mat) otherwise."""
    omega = np.random.default_rng(seed).standard_normal((mat.shape[1], q), dtype=np.float32)
    basis = _orth(mat @ omega)
    for _ in range(niter):
        basis = _orth(mat @ (basis if symmetric else _orth(mat_t @ basis)))
    return basis


def truncated_svd(mat, k: int, seed: int, niter: int = 6, symmetric: bool = False):
    """(U * sqrt(S) as float32 (n, k), explained fraction of the squared Frobenius norm).

    Randomized subspace iteration (sketch k + 10 columns, `niter` power iterations) under a fixed
    seed; for a symmetric matrix the singular pairs come from the eigenpairs of the projected
    matrix (|eigenvalue| = singular value), so each iteration costs one sparse product. Column
    signs are fixed so that each column's largest-magnitude entry is positive (identical results
    run to run)."""
    with blas_threads():
        return _truncated_svd(sp.csr_matrix(mat, dtype=np.float32), k, seed, niter, symmetric)


def _truncated_svd(mat, k: int, seed: int, niter: int, symmetric: bool):
    n, m = mat.shape
    k_eff = max(1, min(k, n - 1, m - 1))
    if mat.nnz == 0:
        return np.zeros((n, k), dtype=np.float32), 0.0
    q = min(k_eff + OVERSAMPLE, n, m)
    a = _Sparse(mat)
    a_t = a if symmetric else _Sparse(mat.T.tocsr())
    if symmetric:
        basis = _range(a, a_t, k_eff, q, seed, niter, symmetric)
        small = (basis.T @ (a @ basis)).astype(np.float64)
        vals, vecs = np.linalg.eigh((small + small.T) / 2)
        order = np.argsort(-np.abs(vals))[:k_eff]
        s, u = np.abs(vals[order]), basis @ vecs[:, order].astype(np.float32)
    elif m < n:
        # a tall matrix (items x tag vocabulary): the subspace iteration runs on the narrow side,
        # so every QR is (m, q), not (n, q); U comes from one SVD of mat @ basis (n, q)
        basis = _range(a_t, a, k_eff, q, seed, niter, symmetric)
        y = (a @ basis).astype(np.float64)
        # left singular vectors of the tall y from the eigenpairs of its (q, q) Gram matrix:
        # one n q^2 product instead of an SVD of (n, q) (0.05 vs 1 s for 92k x 74)
        vals, w = eigh_desc(y.T @ y)
        s = np.sqrt(vals[:k_eff].clip(min=0))
        u = (y @ (w[:, :k_eff] / np.maximum(s, 1e-12 * max(s[0], 1e-300)))).astype(np.float32)
    else:
        basis = _range(a, a_t, k_eff, q, seed, niter, symmetric)
        small = (a_t @ basis).astype(np.float64)  # (m, q) = (basis^T mat)^T
        # its singular pairs from the (q, q) Gram matrix, as for a tall matrix above
        vals, w = eigh_desc(small.T @ small)
        s, u = np.sqrt(vals[:k_eff].clip(min=0)), basis @ w[:, :k_eff].astype(np.float32)
    pivot = np.abs(u).argmax(axis=0)
    signs = np.sign(u[pivot, np.arange(u.shape[1])])
    signs[signs == 0] = 1
    emb = (u * signs * np.sqrt(s)).astype(np.float32)
    total = float((mat.data.astype(np.float64) ** 2).sum())
    explained = float((s ** 2).sum()) / total if total > 0 else 0.0
    if k_eff < k:
        emb = np.pad(emb, ((0, 0), (0, k - k_eff)))
    return emb, explained

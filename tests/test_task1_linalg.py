"""The fast paths of task1 (randomized SVD, sliced co-occurrence counts, PCA on a row sample,
prepare without copies) against plain reference computations."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from task1 import behaviour, fuse
from task1.linalg import truncated_svd


def _low_rank(rng, n, m, rank, noise=1e-3):
    a = rng.standard_normal((n, rank)) @ np.diag(np.linspace(10, 3, rank)) @ rng.standard_normal((rank, m))
    return a + noise * rng.standard_normal((n, m))


@pytest.mark.parametrize("symmetric", [False, True])
def test_truncated_svd_matches_dense_svd(symmetric):
    rng = np.random.default_rng(1)
    a = _low_rank(rng, 300, 300 if symmetric else 200, 8)
    if symmetric:
        a = a + a.T
    emb, explained = truncated_svd(sp.csr_matrix(a), 8, seed=3, symmetric=symmetric)
    u, s, _ = np.linalg.svd(a)
    # same subspace and scale: emb emb^T equals U_k S_k U_k^T
    np.testing.assert_allclose(emb @ emb.T, (u[:, :8] * s[:8]) @ u[:, :8].T, atol=2e-2 * s[0])
    assert explained == pytest.approx((s[:8] ** 2).sum() / (s ** 2).sum(), rel=1e-3)
    again, _ = truncated_svd(sp.csr_matrix(a), 8, seed=3, symmetric=symmetric)
    np.testing.assert_array_equal(emb, again)  # deterministic under a seed


def test_truncated_svd_pads_and_empty():
    emb, explained = truncated_svd(sp.csr_matrix((5, 4)), 3, seed=0)
    assert emb.shape == (5, 3) and not emb.any() and explained == 0.0
    emb, _ = truncated_svd(sp.csr_matrix(np.eye(4)), 10, seed=0)
    assert emb.shape == (4, 10) and not emb[:, 3:].any()


def _brute(seqs, n, window):
    co = np.zeros((n + 1, n + 1))
    for values, parents in seqs:
        for pid in np.unique(parents):
            s = values[parents == pid]
            for i in range(len(s)):
                for d in range(1, window + 1):
                    if i + d < len(s) and s[i] != s[i + d]:
                        co[s[i], s[i + d]] += 1 / d
                        co[s[i + d], s[i]] += 1 / d
    return co


def test_cooccurrence_equals_brute_force_across_slices(monkeypatch):
    rng = np.random.default_rng(0)
    n, window = 30, 3
    seqs = []
    for _ in range(2):
        lens = rng.integers(1, 9, 40)
        seqs.append((rng.integers(1, n + 1, lens.sum()), np.repeat(np.arange(40), lens)))
    want = _brute(seqs, n, window)
    monkeypatch.setattr(behaviour, "CHUNK_VALUES", 7)  # pairs cross many slice cuts
    monkeypatch.setattr(behaviour, "MERGE_EVERY", 3)
    got = behaviour.cooccurrence(seqs, n, window).toarray()
    np.testing.assert_allclose(got, want, atol=1e-9)
    monkeypatch.setattr(behaviour, "CHUNK_VALUES", 10_000)
    np.testing.assert_allclose(behaviour.cooccurrence(seqs, n, window).toarray(), want, atol=1e-9)


def _prepare_reference(emb, mask, weight):
    x = np.array(emb, dtype=np.float64)
    mask = mask.copy()
    mask[0] = False
    x[mask] /= np.linalg.norm(x[mask], axis=1, keepdims=True)
    mean = x[mask].mean(axis=0)
    x[~mask] = mean
    x -= mean
    x[0] = 0
    return x * weight / np.sqrt((x[mask] ** 2).sum(1).mean())


@pytest.mark.parametrize("share", [1.0, 0.6])
def test_prepare_matches_reference(share):
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((401, 6)).astype(np.float32)
    mask = rng.random(401) < share
    np.testing.assert_allclose(fuse.prepare(emb, mask, 2.0), _prepare_reference(emb, mask, 2.0), atol=1e-5)


def test_pca_on_row_sample_keeps_the_axes(monkeypatch):
    rng = np.random.default_rng(4)
    x = np.zeros((3001, 40), np.float32)
    x[1:] = (_low_rank(rng, 3000, 40, 5, noise=0.05)).astype(np.float32)
    full, explained_full, _ = fuse._pca_project({"a": x}, 5)
    monkeypatch.setattr(fuse, "PCA_FIT_ROWS", 600)
    part, explained_part, _ = fuse._pca_project({"a": x}, 5, seed=1)
    assert not full[0].any() and not part[0].any()
    # same 5-D subspace: the projections differ by a rotation only
    q_full, q_part = np.linalg.qr(full[1:])[0], np.linalg.qr(part[1:])[0]
    assert np.linalg.svd(q_full.T @ q_part, compute_uv=False).min() > 0.99
    assert explained_part == pytest.approx(explained_full, abs=0.02)


def _ppmi_reference(co, alpha=0.75, shift=1.0):
    co = co.toarray()
    row_sum = co.sum(1)
    ctx = row_sum ** alpha
    out = np.zeros_like(co)
    r, c = np.nonzero(co)
    pmi = np.log(co[r, c]) + np.log(ctx.sum()) - np.log(row_sum[r]) - np.log(ctx[c]) - np.log(shift)
    out[r[pmi > 0], c[pmi > 0]] = pmi[pmi > 0]
    return out


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_ppmi_and_drop_cold_match_dense_references(shift):
    a = sp.random(60, 60, density=0.2, random_state=1)
    a = (a + a.T).tolil()
    a[0, :], a[:, 0], a[58:, :], a[:, 58:] = 0, 0, 0, 0  # padding row and trailing rows without counts
    a = a.tocsr()
    a.eliminate_zeros()
    np.testing.assert_allclose(behaviour.ppmi(a, shift=shift).toarray(), _ppmi_reference(a, shift=shift), atol=1e-5)
    cold = np.random.default_rng(0).random(60) < 0.3
    cold[0] = True
    dense = a.toarray()
    dense[cold] = 0
    dense[:, cold] = 0
    np.testing.assert_array_equal(behaviour.drop_cold(a, cold).toarray(), dense)

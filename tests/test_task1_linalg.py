"""The fast paths of task1 (randomized SVD, sliced co-occurrence counts, PCA on a row sample,
prepare without copies) against plain reference computations."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from task1 import behaviour, fuse
from task1.linalg import truncated_svd


def _low_rank(rng, n, m, rank, noise=1e-3):
    a = rng.standard_normal((n, rank)) @ np.diag(np.linspace(10, 3, rank)) @ rng.standard_normal((rank, m))
    return a + noise * rng.standard_normal((n, m))


@pytest.mark.parametrize("symmetric,m", [(False, 200), (False, 420), (True, 300)])
def test_truncated_svd_matches_dense_svd(symmetric, m):
    """square/wide (range on the row side), tall (range on the narrow column side), symmetric"""
    rng = np.random.default_rng(1)
    a = _low_rank(rng, 300, m, 8)
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


def _sources_reference(sources):
    """(values, list ids) of every non-empty row, padding dropped, by a plain loop."""
    out = []
    for values, offsets in sources:
        v, p = [], []
        for r in range(len(offsets) - 1):
            row = [x for x in values[offsets[r]:offsets[r + 1]] if x > 0]
            v += row
            p += [r] * len(row)
        out.append((np.array(v), np.array(p)))
    return out


def _sources(rng, rows=(50, 30)):
    out = []
    for n_rows in rows:
        lens = rng.integers(0, 9, n_rows)  # empty rows too
        values = rng.integers(1, 40, lens.sum()).astype(np.int32)
        values[rng.random(len(values)) < 0.2] = 0  # padding
        out.append((values, np.concatenate([[0], np.cumsum(lens)])))
    return out


def test_subsample_without_cap_keeps_every_sequence():
    sources = _sources(np.random.default_rng(5))
    got, report = behaviour.subsample(sources, 0, seed=1)
    for (v, p), (rv, rp) in zip(got, _sources_reference(sources)):
        np.testing.assert_array_equal(v, rv)
        np.testing.assert_array_equal(p, rp)
    assert report["subsampled"] is False and report["occurrences_total"] == sum(len(v) for v, _ in got)
    assert behaviour.subsample(sources, report["occurrences_total"], seed=1)[1]["subsampled"] is False


def test_subsample_draws_whole_sequences_under_the_cap_seeded():
    sources = _sources(np.random.default_rng(6))
    ref = _sources_reference(sources)
    got, report = behaviour.subsample(sources, 100, seed=3)
    assert report["subsampled"] is True and report["seed"] == 3 and report["max_occurrences"] == 100
    assert 90 <= report["occurrences_used"] <= 100 == report["max_occurrences"]
    assert report["occurrences_used"] == sum(len(v) for v, _ in got)
    assert report["sequences_used"] == sum(len(np.unique(p)) for _, p in got) < report["sequences_total"]
    for (v, p), (rv, rp) in zip(got, ref):
        for r in np.unique(p):  # a drawn sequence is whole, in order
            np.testing.assert_array_equal(v[p == r], rv[rp == r])
    again, _ = behaviour.subsample(sources, 100, seed=3)
    other, _ = behaviour.subsample(sources, 100, seed=4)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(got, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(got, other))


def test_adamw_without_torch_optim_matches_adamw_with_cosine_schedule():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ref = torch.optim.AdamW(a.parameters(), lr=0.01, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref, T_max=20)
    ours = fuse._AdamW(b.parameters(), lr=0.01, weight_decay=1e-2, steps=20)
    x = torch.randn(32, 5)
    for _ in range(20):
        for model, opt in ((a, ref), (b, ours)):
            opt.zero_grad()
            (model(x) ** 2).sum().backward()
            opt.step()
        sched.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)


def test_top_eigenpairs_by_subspace_iteration_match_a_full_eigh(monkeypatch):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2000, 12)) @ rng.standard_normal((12, 90)) * 3 + 0.1 * rng.standard_normal((2000, 90))
    cov = np.cov(x.T)
    full_vals, full_vecs = fuse._top_eig(cov, 10, seed=0)
    monkeypatch.setattr(fuse, "EIGH_FULL_DIM", 40)
    vals, vecs = fuse._top_eig(cov, 10, seed=0)
    assert vecs.shape[0] == 90 and vecs.shape[1] >= 10
    np.testing.assert_allclose(vals[:10], full_vals[:10], rtol=1e-6)
    assert np.linalg.svd(full_vecs[:, :10].T @ vecs[:, :10], compute_uv=False).min() > 0.999
    np.testing.assert_array_equal(vecs, fuse._top_eig(cov, 10, seed=0)[1])  # seeded


def test_pca_of_parts_equals_pca_of_their_concatenation():
    rng = np.random.default_rng(8)
    a = np.zeros((501, 7), np.float32)
    b = np.zeros((501, 4), np.float32)
    a[1:] = rng.standard_normal((500, 7)) * np.arange(1, 8) + 2
    b[1:] = rng.standard_normal((500, 4)) * 3 - 1
    z, explained, d = fuse._pca_project({"b": b, "a": a}, 3)
    x = np.concatenate([a[1:], b[1:]], axis=1).astype(np.float64)  # sorted by name: a, b
    vals, vecs = np.linalg.eigh(np.cov(x.T, bias=True))
    top = vecs[:, ::-1][:, :3]
    ref = (x - x.mean(0)) @ top
    assert d == 11 and not z[0].any()
    np.testing.assert_allclose(np.abs(z[1:]), np.abs(ref), atol=1e-3)
    assert explained == pytest.approx(vals[::-1][:3].sum() / vals.sum(), rel=1e-5)


def test_prepare_in_place_equals_a_copy():
    rng = np.random.default_rng(9)
    emb = rng.standard_normal((301, 5)).astype(np.float32)
    mask = rng.random(301) < 0.7
    want = fuse.prepare(emb, mask, 1.5)
    same = emb.copy()
    got = fuse.prepare(same, mask, 1.5, copy=False)
    assert got is same
    np.testing.assert_array_equal(got, want)

"""Fuse the parts (text, image, tags, precomputed features, behaviour) into one 128-D vector per item.

Every part is first made comparable (`prepare`): rows L2-normalised, items without that part
get the part's mean (the documented fallback), centred, scaled to unit mean squared norm and
multiplied by its fusion weight. Then:
- pca: concatenate the parts, keep the top 128 principal components;
- contrastive: a content tower (MLP over every part but behaviour) and a behaviour projection are trained
  with a symmetric InfoNCE loss on warm items, so content lands where its behaviour would be;
  output = normalise(content_vec + behaviour_mix * behaviour_vec) for warm items and the content
  vector alone for cold ones, which thereby inherit the behaviour geometry.
Rows are L2-normalised, then scaled to a norm (`output_norm`: by default the provided
item_emb_d128's mean row norm, see task1/config.py). Row 0 (padding) is always zero.
"""
from __future__ import annotations

import numpy as np
import torch

from mmctr import contract as C

from .linalg import blas_threads, eigh_desc

BEHAVIOUR = "behaviour"
CHUNK = 16384  # rows per block in the PCA (bounded float64 temporaries)
PCA_FIT_ROWS = 32768  # the principal axes are fitted on at most this many random items
EIGH_FULL_DIM = 1024  # wider covariances: top eigenpairs by subspace iteration, not a full eigh
EIG_ITERATIONS = 6
UNIT_VARIANCE_NORM = float(np.sqrt(C.EMB_DIM))  # unit variance per dimension


def _top_eig(cov: np.ndarray, k: int, seed: int):
    """(eigenvalues descending, eigenvectors (d, k')) of a covariance: all of them up to
    EIGH_FULL_DIM; above, the top k by seeded subspace iteration (block of k + k/4 + 16,
    EIG_ITERATIONS float32 products, Rayleigh-Ritz in float64); the explained fraction then comes from the trace."""
    d = len(cov)
    if d <= EIGH_FULL_DIM or k >= d // 2:
        vals, vecs = eigh_desc(cov)
        return vals.clip(min=0), vecs
    q = min(d, k + k // 4 + 16)
    c32 = torch.from_numpy(cov.astype(np.float32))
    basis = torch.from_numpy(np.random.default_rng(seed).standard_normal((d, q), dtype=np.float32))
    for _ in range(EIG_ITERATIONS):
        basis = torch.linalg.qr(c32 @ basis)[0]
    basis = basis.double().numpy()
    vals, w = eigh_desc(basis.T @ cov @ basis)
    return vals.clip(min=0), basis @ w


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def prepare(emb: np.ndarray, mask: np.ndarray, weight: float, copy: bool = True) -> np.ndarray:
    """emb (n+1, d), mask (n+1,) rows that have this part -> comparable float32 (n+1, d);
    copy=False works in place on a float32 emb (the build's own arrays: 0.7 GB less at 91k items)."""
    x = np.array(emb, dtype=np.float32) if copy else np.asarray(emb, dtype=np.float32)
    mask = mask.copy()
    mask[0] = False
    if not mask.any():
        return np.zeros_like(x)
    # a slice (a view, no copy of a 92k x 1024 block) when every item has the part
    have = slice(1, None) if mask[1:].all() else np.flatnonzero(mask)
    sub = x[have]
    sub /= np.maximum(np.sqrt(np.einsum("ij,ij->i", sub, sub)), 1e-12)[:, None]
    x[have] = sub  # no-op for a view; writes back a fancy-indexed copy
    mean = sub.mean(axis=0, dtype=np.float64).astype(np.float32)
    x[~mask] = mean  # fallback: an item without this part sits at the part's mean
    x -= mean
    x[0] = 0
    sub = x[have]
    energy = float(np.sqrt(np.einsum("ij,ij->i", sub, sub, dtype=np.float64).mean()))
    x *= np.float32(weight / max(energy, 1e-12))
    return x


def provided_norm(emb: np.ndarray) -> float:
    """The mean L2 norm of the non-zero rows of a provided item_emb_d128 (row 0 is padding);
    UNIT_VARIANCE_NORM when every row is zero."""
    norms = np.linalg.norm(np.asarray(emb[1:], dtype=np.float64), axis=1)
    norms = norms[norms > 0]
    return float(norms.mean()) if norms.size else UNIT_VARIANCE_NORM


def finish(z: np.ndarray) -> np.ndarray:
    z = _l2(z.astype(np.float64)).astype(np.float32)
    z[0] = 0
    return z


def _fit_rows(n1: int, seed: int) -> np.ndarray:
    """Rows 1..n the principal axes are fitted on: all of them, or PCA_FIT_ROWS drawn at random
    (the top axes of a 1,856-D concatenation are set well by 30k rows; a full pass costs
    n x d^2 multiply-adds). Every row is still projected."""
    rows = np.arange(1, n1)
    if len(rows) <= PCA_FIT_ROWS:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, PCA_FIT_ROWS, replace=False))


def _pca_project(parts: dict, dim: int, seed: int = 0):
    """Project items 1..n of the parts' concatenation (sorted by name) on its top `dim` principal
    components. Returns (z (n+1, dim) float32 with row 0 zero, explained fraction, input dim).
    Mean and covariance come from `_fit_rows` in one pass of row blocks, part by part (every
    block of X^T X as float32 products summed in float64), and the projection is the sum of each
    part's own product: the concatenation is never built, so memory stays at one block of rows."""
    names = sorted(parts)
    n1 = len(parts[names[0]])
    widths = [parts[k].shape[1] for k in names]
    offs = np.concatenate([[0], np.cumsum(widths)])
    d = int(offs[-1])
    fit = _fit_rows(n1, seed)
    n = max(len(fit), 1)
    total, gram = np.zeros(d), np.zeros((d, d))
    for start in range(0, len(fit), CHUNK):
        rows = fit[start:start + CHUNK]
        sel = slice(int(rows[0]), int(rows[-1]) + 1) if rows[-1] - rows[0] == len(rows) - 1 else rows
        xs = [torch.from_numpy(np.asarray(parts[k][sel], np.float32)) for k in names]
        for i, xi in enumerate(xs):
            total[offs[i]:offs[i + 1]] += xi.sum(0).double().numpy()
            for j in range(i, len(xs)):
                block = (xi.T @ xs[j]).double().numpy()
                gram[offs[i]:offs[i + 1], offs[j]:offs[j + 1]] += block
                if j != i:
                    gram[offs[j]:offs[j + 1], offs[i]:offs[i + 1]] += block.T
    mean = total / n
    cov = gram / n - np.outer(mean, mean)
    vals, vecs = _top_eig(cov, dim, seed)
    k = min(dim, d, len(vals))
    vecs = vecs[:, :k]
    vecs *= np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(k)])  # deterministic signs
    z = np.zeros((n1, dim), np.float32)
    v32 = [torch.from_numpy(np.ascontiguousarray(vecs[offs[i]:offs[i + 1]], np.float32)) for i in range(len(names))]
    shift = torch.from_numpy((mean @ vecs).astype(np.float32))
    for start in range(1, n1, CHUNK):
        stop = min(n1, start + CHUNK)
        out = -shift.expand(stop - start, k).clone()
        for name, v in zip(names, v32):
            out.addmm_(torch.from_numpy(np.asarray(parts[name][start:stop], np.float32)), v)
        z[start:stop, :k] = out.numpy()
    trace = float(np.trace(cov))
    explained = float(min(vals[:k].sum() / trace, 1.0)) if trace > 0 else 0.0
    return z, explained, d


def pca(parts: dict, dim: int = C.EMB_DIM):
    """parts: name -> prepared (n+1, d). Returns (emb (n+1, dim), info)."""
    z, explained, d_in = _pca_project(parts, dim)
    return finish(z), {"method": "pca", "input_dim": d_in, "explained_variance": round(explained, 4)}


class _AdamW:
    """torch.optim.AdamW (betas 0.9/0.999, eps 1e-8, decoupled weight decay) under a cosine
    learning-rate schedule to zero over `steps`, as CosineAnnealingLR: the same updates without
    torch.optim, whose first use imports torch._dynamo (1.2 s CPU, 5 s wall on shared cores)."""

    def __init__(self, params, lr: float, weight_decay: float, steps: int):
        self.params = [p for p in params]
        self.lr, self.wd, self.steps, self.t = lr, weight_decay, steps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none: bool = True):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        lr = self.lr * (1 + np.cos(np.pi * self.t / self.steps)) / 2
        self.t += 1
        bc1, bc2 = 1 - 0.9 ** self.t, 1 - 0.999 ** self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            p.mul_(1 - lr * self.wd)
            m.lerp_(p.grad, 0.1)
            v.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
            p.addcdiv_(m, (v.sqrt() / np.sqrt(bc2)).add_(1e-8), value=-lr / bc1)


def _train_steps(f, h, opt, content, behave, train, bs, log_t, gen, dev, steps, progress, losses):
    """The InfoNCE steps: random batches of warm training items, content vs behaviour."""
    for _ in (progress(steps, desc="fusion") if progress else steps):
        b = train[torch.randint(len(train), (bs,), generator=gen)].unique()
        zc = torch.nn.functional.normalize(f(content[b].to(dev)), dim=-1)
        zb = torch.nn.functional.normalize(h(behave[b].to(dev)), dim=-1)
        logits = zc @ zb.T / log_t.exp()
        target = torch.arange(len(b), device=dev)
        loss = (torch.nn.functional.cross_entropy(logits, target)
                + torch.nn.functional.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())


def contrastive(parts: dict, warm: np.ndarray, cfg: dict, seed: int, device: str = "cpu",
                dim: int = C.EMB_DIM, progress=None):
    """Align content to behaviour (InfoNCE); returns (emb (n+1, dim), info)."""
    names = [k for k in sorted(parts) if k != BEHAVIOUR]
    # content = top principal components of the content parts (cheap tower, less noise)
    content_np, content_explained, d_in = _pca_project({k: parts[k] for k in names}, cfg.content_dim, seed)
    content = torch.from_numpy((content_np / np.sqrt((content_np ** 2).sum(1).mean())).astype(np.float32))
    behave = torch.from_numpy(parts["behaviour"])
    warm = warm.copy()
    warm[0] = False
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        f = torch.nn.Sequential(torch.nn.Linear(content.shape[1], cfg.hidden), torch.nn.GELU(),
                                torch.nn.Linear(cfg.hidden, dim))
        h = torch.nn.Linear(behave.shape[1], dim, bias=False)
    dev = torch.device(device)
    f, h = f.to(dev), h.to(dev)
    log_t = torch.tensor(np.log(cfg.temperature), device=dev)
    idx = torch.from_numpy(np.flatnonzero(warm))
    idx = idx[torch.randperm(len(idx), generator=gen)]
    n_hold = int(round(len(idx) * cfg.holdout)) if len(idx) >= 40 else 0
    hold, train = idx[:n_hold], idx[n_hold:]
    info = {"method": "contrastive", "content_parts": names, "input_dim": d_in,
            "content_dim": int(content.shape[1]), "content_explained_variance": round(content_explained, 4),
            "warm_items": int(len(idx)), "holdout_items": int(n_hold)}
    if len(train) < 2:
        # no behaviour to align to: the content tower is untrained; fall back to PCA of content
        z, pinfo = pca({k: parts[k] for k in names}, dim)
        return z, {**info, **pinfo, "method": "pca (no warm items for contrastive)"}
    opt = _AdamW([*f.parameters(), *h.parameters()], lr=cfg.lr, weight_decay=1e-4, steps=cfg.steps)
    bs = min(cfg.batch_size, len(train))
    steps = range(cfg.steps)
    losses = []
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        # One step is ~0.1 GFLOP: a second thread gains little, and on shared cores its
        # synchronisation made steps 10x slower (1,300 vs 125 ms at load 12 on 2 cores).
        torch.set_num_threads(1)
    try:
        _train_steps(f, h, opt, content, behave, train, bs, log_t, gen, dev, steps, progress, losses)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        zc = torch.cat([torch.nn.functional.normalize(f(c.to(dev)), dim=-1).cpu()
                        for c in content.split(65536)])
        zb = torch.cat([torch.nn.functional.normalize(h(c.to(dev)), dim=-1).cpu()
                        for c in behave.split(65536)])
    info["final_loss"] = round(float(np.mean(losses[-20:])), 4)
    if n_hold:
        sims = zc[hold] @ zb[hold].T  # content of a held-out item vs behaviour of all held-out items
        rank = (sims > sims.diag()[:, None]).sum(1)
        info["holdout_recall_at_10"] = round(float((rank < 10).float().mean()), 4)
        info["holdout_recall_at_10_chance"] = round(min(1.0, 10 / n_hold), 4)
    mix = cfg.behaviour_mix
    w = torch.from_numpy(warm).float()[:, None]
    aligned = (zc + mix * w * zb).numpy()
    # The alignment keeps only what content shares with behaviour; the content's own
    # principal components keep the rest (e.g. cover style that behaviour hardly shows).
    z, explained, _ = _pca_project({"aligned": aligned / np.sqrt((aligned[1:] ** 2).sum(1).mean()),
                                    "content": content.numpy()}, dim, seed)
    info["explained_variance"] = round(explained, 4)
    return finish(z), info


def fuse(parts: dict, masks: dict, weights: dict, cfg, warm, seed: int, device="cpu", progress=None,
         copy: bool = True, *, norm: float):
    """parts/masks/weights: name -> raw (n+1, d) array / (n+1,) mask / fusion weight; cfg: FusionCfg;
    norm: every row's L2 norm (build resolves cfg.output_norm to it).
    Returns (emb (n+1, 128), info). copy=False: the parts' float32 arrays are overwritten.

    An item that has none of the parts (every part fell back) gets the all-zero vector."""
    with blas_threads():
        prepared = {k: prepare(parts[k], masks[k], float(weights[k]), copy) for k in parts}
        if cfg.method == "pca":
            z, info = pca(prepared)
        else:
            z, info = contrastive(prepared, warm, cfg, seed, device=device, progress=progress)
    z = z * np.float32(norm)
    info["output_norm"] = round(float(norm), 6)
    nothing = ~np.logical_or.reduce([masks[k] for k in parts])
    nothing[0] = True
    z[nothing] = 0
    info["items_without_any_part"] = int(nothing[1:].sum())
    return z, info

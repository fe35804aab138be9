"""Fuse the parts (text, image, tags, precomputed features, behaviour) into one 128-D vector per item.

Every part is first made comparable (`prepare`): rows L2-normalised, items without that part
get the part's mean (the documented fallback), centred, scaled to unit mean squared norm and
multiplied by its fusion weight. Then:
- pca: concatenate the parts, keep the top 128 principal components;
- contrastive: a content tower (MLP over every part but behaviour) and a behaviour projection are trained
  with a symmetric InfoNCE loss on warm items, so content lands where its behaviour would be;
  output = normalise(content_vec + behaviour_mix * behaviour_vec) for warm items and the content
  vector alone for cold ones, which thereby inherit the behaviour geometry.
Rows are L2-normalised, then scaled to `output_norm` (default sqrt(128): unit variance per
dimension, the scale the fixed DIN's Linear(128, 128) learns best from). Row 0 (padding) is
always zero.
"""
from __future__ import annotations

import numpy as np
import torch

from mmctr import contract as C

from .linalg import blas_threads

BEHAVIOUR = "behaviour"
CHUNK = 16384  # rows per block in the PCA (bounded float64 temporaries)
PCA_FIT_ROWS = 32768  # the principal axes are fitted on at most this many random items


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def prepare(emb: np.ndarray, mask: np.ndarray, weight: float) -> np.ndarray:
    """emb (n+1, d), mask (n+1,) rows that have this part -> comparable float32 (n+1, d)."""
    x = np.array(emb, dtype=np.float32)  # a copy; float32 keeps wide parts (1024-D x 92k) small
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


def finish(z: np.ndarray) -> np.ndarray:
    z = _l2(z.astype(np.float64)).astype(np.float32)
    z[0] = 0
    return z


def _blocks(parts: dict, n1: int):
    names = sorted(parts)
    for start in range(1, n1, CHUNK):
        stop = min(n1, start + CHUNK)
        yield start, stop, np.concatenate([np.asarray(parts[k][start:stop], np.float32) for k in names], axis=1)


def _fit_rows(n1: int, seed: int) -> np.ndarray:
    """Rows 1..n the principal axes are fitted on: all of them, or PCA_FIT_ROWS drawn at random
    (the top axes of a 1,856-D concatenation are set well by 30k rows; a full pass costs
    n x d^2 multiply-adds). Every row is still projected."""
    rows = np.arange(1, n1)
    if len(rows) <= PCA_FIT_ROWS:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, PCA_FIT_ROWS, replace=False))


def _pca_project(parts: dict, dim: int, seed: int = 0):
    """Concatenate parts (sorted by name), project items 1..n on the top `dim` principal
    components. Returns (z (n+1, dim) float32 with row 0 zero, explained fraction, input dim).
    Mean and covariance come from `_fit_rows`, accumulated block by block (float32 products,
    float64 sums), so memory stays at one block of the concatenation however wide the parts are."""
    n1 = len(next(iter(parts.values())))
    d = sum(parts[k].shape[1] for k in parts)
    fit = _fit_rows(n1, seed)
    fit_parts = {k: v for k, v in parts.items()} if len(fit) == n1 - 1 else \
        {k: np.concatenate([np.zeros((1, v.shape[1]), np.float32), np.asarray(v[fit], np.float32)]) for k, v in parts.items()}
    n = max(len(fit), 1)
    mean = np.zeros(d)
    for _, _, x in _blocks(fit_parts, len(fit) + 1):
        mean += x.sum(axis=0, dtype=np.float64)
    mean /= n
    cov = np.zeros((d, d))
    m32 = mean.astype(np.float32)
    for _, _, x in _blocks(fit_parts, len(fit) + 1):
        xt = torch.from_numpy(x - m32)
        cov += (xt.T @ xt).double().numpy()
    cov /= n
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order].clip(min=0), vecs[:, order]
    k = min(dim, d)
    vecs = vecs[:, :k]
    vecs *= np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(k)])  # deterministic signs
    z = np.zeros((n1, dim), np.float32)
    v32, shift = vecs.astype(np.float32), (mean @ vecs).astype(np.float32)
    for start, stop, x in _blocks(parts, n1):
        z[start:stop, :k] = x @ v32 - shift
    explained = float(vals[:k].sum() / vals.sum()) if vals.sum() > 0 else 0.0
    return z, explained, int(d)


def pca(parts: dict, dim: int = C.EMB_DIM):
    """parts: name -> prepared (n+1, d). Returns (emb (n+1, dim), info)."""
    z, explained, d_in = _pca_project(parts, dim)
    return finish(z), {"method": "pca", "input_dim": d_in, "explained_variance": round(explained, 4)}


def _train_steps(f, h, opt, sched, content, behave, train, bs, log_t, gen, dev, steps, progress, losses):
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
        sched.step()
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
    opt = torch.optim.AdamW([*f.parameters(), *h.parameters()], lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    bs = min(cfg.batch_size, len(train))
    steps = range(cfg.steps)
    losses = []
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        # One step is ~0.1 GFLOP: a second thread gains little, and on shared cores its
        # synchronisation made steps 10x slower (1,300 vs 125 ms at load 12 on 2 cores).
        torch.set_num_threads(1)
    try:
        _train_steps(f, h, opt, sched, content, behave, train, bs, log_t, gen, dev, steps, progress, losses)
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


def fuse(parts: dict, masks: dict, weights: dict, cfg, warm, seed: int, device="cpu", progress=None):
    """parts/masks/weights: name -> raw (n+1, d) array / (n+1,) mask / fusion weight; cfg: FusionCfg.
    Returns (emb (n+1, 128), info).

    An item that has none of the parts (every part fell back) gets the all-zero vector."""
    with blas_threads():
        prepared = {k: prepare(parts[k], masks[k], float(weights[k])) for k in parts}
        if cfg.method == "pca":
            z, info = pca(prepared)
        else:
            z, info = contrastive(prepared, warm, cfg, seed, device=device, progress=progress)
    z = z * np.float32(cfg.output_norm)
    nothing = ~np.logical_or.reduce([masks[k] for k in parts])
    nothing[0] = True
    z[nothing] = 0
    info["items_without_any_part"] = int(nothing[1:].sum())
    return z, info

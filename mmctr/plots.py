"""Pictures of runs (matplotlib, Agg backend: no display needed).

- `plot_history(run_dir)`: `<run>/training.png`, train loss / valid AUC / valid logloss per
  epoch from history.jsonl, best epoch marked;
- `plot_task1(out_dir)`: `<out>/item_info.report.png` from item_info.manifest.json: parts,
  explained variance, content -> behaviour recall, time per step;
- `plot_results(runs_root, out)`: every run of results.csv side by side.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .errors import KitError
from .io import atomic_path

REPORT_PNG = "report.png"
BEST_COLOR, LINE_COLOR = "#d62728", "#1f77b4"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def plot_history(run_dir, out=None) -> Path:
    """Draw `<run>/training.png` from `<run>/history.jsonl`; the best valid AUC epoch is marked."""
    from .rundir import RunDir
    from .runs import read_history

    run = RunDir(run_dir)
    history = read_history(run_dir)
    if not history:
        raise KitError(f"{run.history} is missing or empty: nothing to plot")
    manifest = json.loads(run.manifest.read_text()) if run.manifest.is_file() else {}
    epochs = [h["epoch"] for h in history]
    aucs = [h.get("valid_auc") for h in history]
    finite = [(e, a) for e, a in zip(epochs, aucs) if _finite(a)]
    best_epoch = manifest.get("best_epoch") or (max(finite, key=lambda t: t[1])[0] if finite else None)

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (("train_loss", "train loss (BCE)"), ("valid_auc", "valid AUC"), ("valid_logloss", "valid logloss"))
    for ax, (key, title) in zip(axes, panels):
        pts = [(h["epoch"], h.get(key)) for h in history if _finite(h.get(key))]
        if pts:
            ax.plot(*zip(*pts), marker="o", color=LINE_COLOR, lw=1.5, ms=4)
        best = [v for e, v in pts if e == best_epoch]
        if best:
            ax.axvline(best_epoch, color=BEST_COLOR, ls="--", lw=1)
            ax.plot([best_epoch], best, marker="*", color=BEST_COLOR, ms=14, ls="none",
                    label=f"best epoch {best_epoch}: {best[0]:.4f}")
            ax.legend(loc="best", fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(epochs) < 15:
            ax.set_xticks(epochs)
    name = manifest.get("model") or run.path.name
    extra = f", {manifest['samples_per_s']:,.0f} samples/s" if _finite(manifest.get("samples_per_s")) else ""
    fig.suptitle(f"{name}: {run.path}{extra}", fontsize=10, y=1.02)
    return _save(fig, Path(out) if out else run.plot)


def plot_task1(out_dir, out=None) -> Path:
    """Draw `<out>/item_info.report.png` from the task1 build's item_info.manifest.json."""
    from .rundir import Task1Dir

    t1 = Task1Dir(out_dir)
    m = t1.read_manifest()
    parts = m.get("parts") or {}
    fusion = parts.get("fusion") or {}
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(18, 4), gridspec_kw={"width_ratios": [1.2, 1.2, 0.8, 1]})

    # 1. the parts fused, with their input width and how many items had each
    ax = axes[0]
    n = m.get("n_items") or 0
    names, dims, cover = [], [], []
    for name in ("text", "image", "tags", "behaviour"):
        p = parts.get(name)
        if not isinstance(p, dict):
            continue
        names.append(name)
        dims.append(p.get("dim") or ((m.get("config") or {}).get(name) or {}).get("dim") or 0)
        missing = {"text": p.get("empty_titles"), "image": (p.get("missing") or 0) + (p.get("unreadable") or 0),
                   "tags": p.get("items_without_tags")}.get(name)
        if name == "behaviour":
            warm = p.get("warm_items")
            cover.append(100 * warm / n if n and _finite(warm) else None)
        else:
            cover.append(100 * (n - missing) / n if n and _finite(missing) else None)
    bars = ax.barh(names, dims, color=LINE_COLOR)
    for b, d, c in zip(bars, dims, cover):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2,
                f" {d}-D" + (f", {c:.0f}% items" if c is not None else ""), va="center", fontsize=8)
    ax.set_title(f"parts -> {fusion.get('method', '?')} fusion -> 128-D")
    ax.set_xlabel("part width (dims)")
    ax.set_xlim(0, max(dims or [1]) * 1.9)
    ax.invert_yaxis()

    # 2. explained variance of each projection
    ax = axes[1]
    cfg = m.get("config") or {}
    given = m.get("explained_variance") or {}
    named = [(f"tags SVD -> {(cfg.get('tags') or {}).get('dim', '?')}-D", given.get("tags_svd")),
             (f"behaviour SVD -> {(cfg.get('behaviour') or {}).get('dim', '?')}-D", given.get("behaviour_svd")),
             (f"content -> {fusion.get('content_dim', '?')}-D", fusion.get("content_explained_variance")),
             ("fused -> 128-D", given.get("fusion"))]
    ev = {k: v for k, v in named if _finite(v)}
    if ev:
        bars = ax.barh(list(ev), [100 * v for v in ev.values()], color="#2ca02c")
        for b, v in zip(bars, ev.values()):
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {100 * v:.1f}%", va="center", fontsize=8)
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no explained variance in the manifest", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 118)
    ax.set_title("variance kept by each projection")
    ax.set_xlabel("% explained")

    # 3. content -> behaviour alignment on held-out warm items
    ax = axes[2]
    recall, chance = fusion.get("holdout_recall_at_10"), fusion.get("holdout_recall_at_10_chance")
    if _finite(recall):
        vals = [recall] + ([chance] if _finite(chance) else [])
        labels = ["content ->\nbehaviour"] + (["chance"] if _finite(chance) else [])
        bars = ax.bar(labels, [100 * v for v in vals], color=[LINE_COLOR, "#7f7f7f"][:len(vals)])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{100 * v:.1f}%", ha="center", va="bottom",
                    fontsize=9)
        ax.set_ylim(0, 110)
        ax.set_title(f"recall@10, {fusion.get('holdout_items', '?')} held-out items")
    else:
        ax.text(0.5, 0.5, f"no content -> behaviour recall\n(fusion: {fusion.get('method', '?')})",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_title("recall@10 (contrastive fusion only)")
    ax.set_ylabel("%")

    # 4. time per step
    ax = axes[3]
    order = ["read_items", "text", "image", "tags", "behaviour", "fusion", "write"]
    timings = {k: v for k, v in sorted((m.get("timings") or {}).items(),
                                       key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
               if k != "total" and _finite(v)}
    if timings:
        bars = ax.barh(list(timings), list(timings.values()), color="#9467bd")
        for b, v in zip(bars, timings.values()):
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:.1f}s", va="center", fontsize=8)
        ax.set_xlim(0, max(timings.values()) * 1.3 or 1)
        ax.invert_yaxis()
    ax.set_title(f"time per step (total {(m.get('timings') or {}).get('total', 0):.0f} s, {m.get('device', '?')})")
    ax.set_xlabel("seconds")
    fig.suptitle(f"task1 build: {n:,} items, {m.get('missing_images', 0)} missing covers — {out_dir}", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(out) if out else t1.report)


def plot_results(runs_root, out=None, track: str | None = None, model: str | None = None) -> Path:
    """Draw `<runs_root>/report.png`: best valid AUC of every run in results.csv (by track) and
    the valid AUC curve of each run whose history.jsonl is still there."""
    from .runs import RESULTS_NAME, ranked, read_history, read_results

    root = Path(runs_root)
    rows = ranked(read_results(root, track=track, model=model))
    rows = [r for r in rows if r["best_valid_auc"] is not None]
    if not rows:
        raise KitError(f"{root / RESULTS_NAME} has no run with a valid AUC to draw")
    plt = _pyplot()
    tracks = sorted({r["track"] for r in rows}, key=lambda t: [r["track"] for r in rows].index(t))
    colors = dict(zip(tracks, plt.get_cmap("tab10").colors))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, max(3.5, 0.32 * len(rows) + 1.5)),
                                  gridspec_kw={"width_ratios": [1.2, 1]})
    names = [f"{r['track']} {r['model']}{' ' + r['label'] if r['label'] else ''} · {r['run_dir']}"
             for r in rows]
    aucs = [r["best_valid_auc"] for r in rows]
    bars = ax.barh(range(len(rows)), aucs, color=[colors[r["track"]] for r in rows])
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.invert_yaxis()
    lo = min(aucs)
    ax.set_xlim(max(0.0, lo - 0.05), min(1.0, max(aucs) + 0.03))
    for b, r in zip(bars, rows):
        sps = f", {r['samples_per_s']:,.0f}/s" if r["samples_per_s"] else ""
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {r['best_valid_auc']:.4f}{sps}",
                va="center", fontsize=7)
    ax.set_xlabel("best valid AUC")
    ax.set_title(f"{len(rows)} runs in {root / RESULTS_NAME} (best per track first)")
    for t in tracks:
        ax.barh([0], [0], color=colors[t], label=t)
    ax.legend(loc="lower right", fontsize=8, title="track")

    drawn = 0
    for r in rows:
        try:
            hist = read_history(root / r["run_dir"]) if r["run_dir"] else []
        except KitError:  # one damaged history.jsonl costs its curve, not the whole report
            hist = []
        pts = [(h["epoch"], h["valid_auc"]) for h in hist if _finite(h.get("valid_auc"))]
        if pts:
            ax2.plot(*zip(*pts), marker="o", ms=3, lw=1.2, color=colors[r["track"]], alpha=0.8)
            ax2.annotate(f"{r['model']}{' ' + r['label'] if r['label'] else ''}", pts[-1], fontsize=6,
                         xytext=(3, 0), textcoords="offset points")
            drawn += 1
    from matplotlib.ticker import MaxNLocator

    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_title(f"valid AUC per epoch ({drawn} runs with history.jsonl)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("valid AUC")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, Path(out) if out else root / REPORT_PNG)

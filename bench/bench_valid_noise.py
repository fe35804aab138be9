"""How much of a run's "fall after the best" and "gap to the oracle" is the validation set's own noise.

Loads a finished task2 run's best.pt and last.pt (both sha256-checked against its manifest),
scores the valid rows with each, and bootstraps the rows (paired: the same resample for both
checkpoints, and for the generator's sequence-only oracle when the data is a generated sample):
the standard error of valid AUC, of the fall (best - last) and of the gap (oracle - best).

    python bench/bench_valid_noise.py --run runs/task1_2/task2 --data-dir data/sample

Measured 2026-11-23, 2 shared CPU cores, fresh-clone `make demo` run (seed 20242025, demo sample:
3,000 valid rows), 2,000 resamples: see docs/benchmarks.md ("How fine the demo measures").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmctr import contract as C  # noqa: E402
from mmctr import rundir as R  # noqa: E402
from mmctr.io import environment  # noqa: E402
from mmctr.metrics import roc_auc  # noqa: E402
from mmctr.paths import DataPaths  # noqa: E402
from task2.checkpoint import model_from_state  # noqa: E402
from task2.data import ItemTable, load_split  # noqa: E402
from task2.predict import predict_split  # noqa: E402


def scores(run: R.RunDir, name: str, key: str, manifest: dict, items: ItemTable, valid) -> tuple:
    """(valid click probabilities, the checkpoint's epoch) of one pinned checkpoint of the run."""
    state = run.load_checkpoint(name, pinned=manifest[key][R.SHA256])
    model = model_from_state(state, items, run.path / name)
    return predict_split(model, valid, 16384, torch.device("cpu"), amp=False), state.get("epoch")


def bootstrap(labels: np.ndarray, columns: dict, n: int, seed: int) -> dict:
    """{name: array of n AUCs}, every column on the same n resamples of the rows."""
    rng = np.random.default_rng(seed)
    out = {k: np.empty(n) for k in columns}
    for i in range(n):
        idx = rng.integers(0, len(labels), len(labels))
        for k, s in columns.items():
            out[k][i] = roc_auc(labels[idx], s[idx])
    return out


def measure(run: Path, data_dir, resamples: int = 2000, seed: int = 0) -> dict:
    """{"rows", "epochs", "auc": {name: AUC}, "sd": {name: bootstrap sd}, "diff": {what: (value,
    sd, 2.5%, 97.5%)}} for best, last and (on a generated sample) the sequence-only oracle."""
    root = DataPaths.resolve(data_dir).root
    manifest = R.RunDir(run).read_manifest()
    items = ItemTable.load(R.resolve_located(manifest[R.ITEM_INFO], root, run))
    valid = load_split(root / C.VALID.relpath, manifest[R.CONFIG]["max_len"], items.n_items, need_label=True)
    labels = valid.label.numpy()
    cols, epochs = {}, {}
    for name, key, label in ((R.BEST, R.CHECKPOINT, "best"), (R.LAST, R.LAST_CHECKPOINT, "last")):
        cols[label], epochs[label] = scores(R.RunDir(run), name, key, manifest, items, valid)
    if (root / "sample_truth" / "summary.json").is_file():
        from bench_gap import _split, rebuild

        world, _ = rebuild(root)
        seqs, targets = _split(root, C.VALID)
        cols["oracle"] = world.seq_oracle_logit(targets, seqs)
    full = {k: roc_auc(labels, s) for k, s in cols.items()}
    boot = bootstrap(labels, cols, resamples, seed)
    pairs = {"fall (best - last)": ("best", "last")}
    if "oracle" in cols:
        pairs["gap (oracle - best)"] = ("oracle", "best")
    diff = {}
    for what, (a, b) in pairs.items():
        d = boot[a] - boot[b]
        diff[what] = (full[a] - full[b], float(d.std()), *np.percentile(d, [2.5, 97.5]).tolist())
    return {"rows": len(labels), "epochs": epochs, "auc": full, "sd": {k: float(v.std()) for k, v in boot.items()},
            "diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished `task2 train` folder (best.pt, last.pt)")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    r = measure(Path(args.run), args.data_dir, args.resamples, args.seed)
    print(f"machine: {environment()}")
    print(f"run: {args.run} (best.pt epoch {r['epochs']['best']}, last.pt epoch {r['epochs']['last'] + 1}); "
          f"{r['rows']:,} valid rows, {args.resamples} paired bootstrap resamples")
    for k, auc in r["auc"].items():
        print(f"  valid AUC {k:<6} {auc:.4f}  bootstrap sd {r['sd'][k]:.4f}")
    for what, (value, sd, lo, hi) in r["diff"].items():
        print(f"  {what:<20} {value:+.4f}  sd {sd:.4f}  95% interval [{lo:+.4f}, {hi:+.4f}]")


if __name__ == "__main__":
    main()

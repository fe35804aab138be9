"""Benchmark task2: valid AUC and training samples/s of the main model against the official
baseline DIN, trained in the same run on the same data, next to the generator's oracle AUC.

    python bench/bench_task2.py --data-dir data/sample                       # CPU, demo size
    python bench/bench_task2.py --data-dir data/full --configs din_baseline,transformer_dcn
          (data/full from `python -m mmctr sample --size full --out data/full`, on a GPU)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mmctr.io import environment  # noqa: E402
from mmctr.metrics import roc_auc  # noqa: E402
from mmctr.paths import DataPaths  # noqa: E402
from mmctr.sample import read_truth, summary  # noqa: E402
from task2.config import load_config, parse_overrides  # noqa: E402
from task2.train import train_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--configs", default="din_baseline,transformer_dcn_small",
                    help="comma-separated; the first is the baseline the ratios refer to")
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--set", action="append", default=[], help="override for every config, KEY=VALUE")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    root = DataPaths.resolve(args.data_dir).root
    try:
        p, y = read_truth(root, "valid")
        oracle = roc_auc(y, p)
        seq_oracle = summary(root).get("valid_seq_oracle_auc")
    except FileNotFoundError:
        oracle = seq_oracle = None
    rows = []
    for name in args.configs.split(","):
        cfg = load_config(name, parse_overrides(args.set))
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            s = train_model(cfg, root, None, tmp, device=args.device, max_epochs=args.max_epochs, quiet=True)
            wall = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        first_epoch = s["history"][0]["train_seconds"] if s["history"] else None
        rows.append({"config": name, "valid_auc": s["best_valid_auc"], "best_epoch": s["best_epoch"],
                     "epochs": len(s["history"]), "samples_per_s": s["samples_per_s"],
                     "first_epoch_s": first_epoch, "wall_s": round(wall, 1), "params": s["params"],
                     "peak_gpu_gib": None if peak is None else round(peak, 2)})
    base = rows[0]
    print(f"machine: {environment()}")
    print(f"data: {root}  oracle valid AUC: {oracle if oracle is None else round(oracle, 4)}  "
          f"sequence-only oracle: {seq_oracle if seq_oracle is None else round(seq_oracle, 4)}")
    print(f"{'config':24} {'valid AUC':>9} {'gap':>7} {'vs base':>8} {'samples/s':>10} {'x base':>7} "
          f"{'epochs':>6} {'epoch1 s':>8} {'wall s':>7} {'params':>9} {'GPU GiB':>7}")
    for r in rows:
        gap = f"{oracle - r['valid_auc']:.4f}" if oracle else "-"
        print(f"{r['config']:24} {r['valid_auc']:9.4f} {gap:>7} {r['valid_auc'] - base['valid_auc']:+8.4f} "
              f"{r['samples_per_s']:10,.0f} {r['samples_per_s'] / base['samples_per_s']:7.2f} "
              f"{r['epochs']:6d} {r['first_epoch_s']:8.1f} {r['wall_s']:7.1f} {r['params']:9,d} "
              f"{'-' if r['peak_gpu_gib'] is None else r['peak_gpu_gib']:>7}")
    if args.json:
        Path(args.json).write_text(json.dumps({"oracle_valid_auc": oracle, "seq_oracle_valid_auc": seq_oracle,
                                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

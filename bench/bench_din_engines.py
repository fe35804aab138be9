"""Benchmark the fixed DIN's two engines side by side: the kit's (task2) and the organisers'
FuxiCTR 2.3.7 DIN (`make fuxictr-env`), same data, same config, same epochs.

Prints valid AUC per epoch and training samples/s of each, and the AUC gap (goal: < 0.005).

    python bench/bench_din_engines.py --data-dir /tmp/fx-data --train-rows 20000 --epochs 2
    python bench/bench_din_engines.py --data-dir data/full --device cuda --epochs 3  # on a GPU
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmctr import contract as C  # noqa: E402
from mmctr.io import environment, read_parquet, read_parquet_metadata, write_parquet  # noqa: E402
from mmctr.paths import DataPaths  # noqa: E402
from task1.evaluate import din_config  # noqa: E402
from task1.fuxictr_engine import train_fuxictr  # noqa: E402
from task2.config import parse_overrides  # noqa: E402
from task2.train import train_model  # noqa: E402

ENGINES = {"kit": train_model, "fuxictr": train_fuxictr}


def subset(root: Path, out: Path, n_train: int | None, n_valid: int | None) -> Path:
    """A copy of the data's train/valid (first rows) and item_info, so both engines read the same."""
    (out / C.CTR_DIR).mkdir(parents=True)
    for table, n in ((C.TRAIN, n_train), (C.VALID, n_valid), (C.ITEM_INFO, None)):
        t = read_parquet(root / table.relpath, what=table.name)
        write_parquet(out / table.relpath, t.slice(0, n) if n else t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--item-info", default=None, help="default: the data's provided item_info.parquet")
    ap.add_argument("--train-rows", type=int, default=None, help="first N train rows (CPU: keep small)")
    ap.add_argument("--valid-rows", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--engines", default="kit,fuxictr")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each engine")
    ap.add_argument("--set", action="append", default=[],
                    help="a key the Task-1 track may change, for both engines, e.g. batch_size=1024")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    root = DataPaths.resolve(args.data_dir).root
    cfg = din_config(overrides={**parse_overrides(args.set), "num_threads": args.threads})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(root, Path(tmp) / "data", args.train_rows, args.valid_rows)
        info = Path(args.item_info) if args.item_info else data / C.ITEM_INFO.relpath
        n_train = read_parquet_metadata(data / C.TRAIN.relpath, what="train").num_rows
        n_valid = read_parquet_metadata(data / C.VALID.relpath, what="valid").num_rows
        for engine in args.engines.split(","):
            t0 = time.perf_counter()
            res = ENGINES[engine](cfg, data, info, Path(tmp) / engine, device=args.device,
                                  max_epochs=args.epochs, quiet=True)
            rows.append({"engine": engine, "train_rows": n_train, "valid_rows": n_valid,
                         "epochs": len(res["history"]), "valid_auc": [round(h["valid_auc"], 5) for h in res["history"]],
                         "best_valid_auc": round(res["best_valid_auc"], 5),
                         "samples_per_s": round(res["samples_per_s"], 1), "wall_s": round(time.perf_counter() - t0, 1)})
    print(f"machine: {environment()}")
    print(f"data: {root} (first {n_train} train / {n_valid} valid rows), threads {args.threads}, "
          f"batch_size {cfg['batch_size']}, net_dropout {cfg['net_dropout']}, lr {cfg['learning_rate']}, "
          f"embedding_regularizer {cfg['embedding_regularizer']}")
    print(f"{'engine':8} {'train rows':>10} {'epochs':>6} {'valid AUC per epoch':>24} {'best AUC':>9} "
          f"{'samples/s':>10} {'wall s':>7}")
    for r in rows:
        print(f"{r['engine']:8} {r['train_rows']:>10} {r['epochs']:>6} {str(r['valid_auc']):>24} "
              f"{r['best_valid_auc']:>9.5f} {r['samples_per_s']:>10,.0f} {r['wall_s']:>7}")
    if len(rows) == 2:
        gap = rows[0]["best_valid_auc"] - rows[1]["best_valid_auc"]
        print(f"AUC gap {rows[0]['engine']} - {rows[1]['engine']}: {gap:+.5f} "
              f"({'within' if abs(gap) < 0.005 else 'outside'} 0.005); "
              f"speed ratio {rows[0]['samples_per_s'] / rows[1]['samples_per_s']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": cfg, "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()

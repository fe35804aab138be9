"""Benchmark item_infos with the fixed DIN (kit engine, din_baseline): valid AUC of each,
same data, seed and epochs, plus a random 128-D floor and, on a generated sample, the oracle.

    python bench/bench_item_info_din.py --data-dir data/sample \\
        --item-info provided_features=/tmp/t1-pf/item_info.parquet \\
        --item-info default=/tmp/t1-default/item_info.parquet --random --epochs 3 --doc docs/task1.md

`provided` (the data's own item_info.parquet) is always measured first. `--json` is rewritten
after each run; `--render a.json,b.json` renders (and with `--doc`, writes) rows of earlier runs
without training. `--doc PAGE` rewrites the block `<!-- bench:item_info_din -->` (or `--block NAME`) of PAGE.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_din_engines import FIXED_SEED, mean_sd, pm, stamp, subset, write_doc_block  # noqa: E402
from mmctr import contract as C  # noqa: E402
from mmctr.io import read_parquet_metadata  # noqa: E402
from mmctr.paths import DataPaths  # noqa: E402
from task1.evaluate import din_config, oracle_auc, random_item_info  # noqa: E402
from task2.config import parse_overrides  # noqa: E402

LABELS = {"provided": "provided item_info (the data's item_emb_d128)",
          "provided_features": "task1 `provided_features` (BERT + CLIP columns + tags + behaviour)",
          "default": "task1 `default` (MiniLM text + EfficientNet covers + tags + behaviour)",
          "random": "random 128-D floor (task1.evaluate.random_item_info)"}


def report_lines(rep: dict) -> list[str]:
    rows = rep["rows"]
    names = list(dict.fromkeys(r["item_info"] for r in rows))
    n_ep = max(r["epochs"] for r in rows)
    seeds = sorted({r["seed"] for r in rows})
    lines = [rep["head"], "",
             "| item_info (fixed DIN, kit engine) | " + " | ".join(f"AUC ep {e + 1}" for e in range(n_ep))
             + f" | best AUC{' (mean ± sd)' if len(seeds) > 1 else ''} | seeds | best epoch per seed | samples/s |",
             "|---|" + "---|" * n_ep + "---|---|---|---|"]
    for name in names:
        rs = [r for r in rows if r["item_info"] == name]
        per_ep = [pm([r["valid_auc"][i] if i < len(r["valid_auc"]) else None for r in rs]) if len(rs) > 1
                  else (f"{rs[0]['valid_auc'][i]:.4f}" if i < len(rs[0]["valid_auc"]) else "-") for i in range(n_ep)]
        best = pm([r["best_valid_auc"] for r in rs]) if len(rs) > 1 else f"{rs[0]['best_valid_auc']:.4f}"
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(per_ep) + f" | {best} | {len(rs)} | "
                     f"{'/'.join(str(r['best_epoch']) for r in rs)} | "
                     f"{mean_sd([r['samples_per_s'] for r in rs])[0]:,.0f} |")
    base = {r["seed"]: r["best_valid_auc"] for r in rows if r["item_info"] == names[0]}
    paired = []
    for name in names[1:]:
        d = [r["best_valid_auc"] - base[r["seed"]] for r in rows if r["item_info"] == name and r["seed"] in base]
        if len(d) > 1:
            paired.append(f"{name} {pm(d, '{:+.4f}')} ({sum(x < 0 for x in d)} of {len(d)} seeds below)")
    if paired:
        paired_line = (f"Best AUC minus {names[0]}'s of the same seed (the same batch order), "
                       "mean ± sd over seeds: " + "; ".join(paired) + ".")
    if rep.get("oracle_valid_auc") is not None:
        lines.append("| oracle (the sample's true click probability) | " + " | " * n_ep
                     + f"{rep['oracle_valid_auc']:.4f} | | | |")
    if paired:
        lines += ["", paired_line]
    lines += ["", f"Seeds: {', '.join(map(str, seeds))}. Config: din_baseline.yaml (batch_size "
              f"{rep['config']['batch_size']}, net_dropout {rep['config']['net_dropout']}, learning_rate "
              f"{rep['config']['learning_rate']}, embedding_regularizer {rep['config']['embedding_regularizer']})."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir")
    ap.add_argument("--item-info", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--no-provided", action="store_true", help="skip the data's own item_info")
    ap.add_argument("--random", action="store_true", help="also the random 128-D floor")
    ap.add_argument("--train-rows", type=int, default=None, help="first N train rows (default: all)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", default=str(FIXED_SEED))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", action="append", default=[], help="a Task-1 tunable DIN key")
    ap.add_argument("--json", help="results, rewritten after each run")
    ap.add_argument("--render", help="comma list of --json files to render instead of training")
    ap.add_argument("--doc", help="rewrite the bench:item_info_din block of this markdown page")
    ap.add_argument("--block", default="item_info_din", help="with --doc: the block to rewrite (bench:NAME)")
    args = ap.parse_args()

    if args.render:
        parts = [json.loads(Path(p).read_text()) for p in args.render.split(",")]
        rep = {**parts[0], "rows": [r for p in parts for r in p["rows"]]}
        rep["head"] += f" Rendered from {len(parts)} bench outputs, each: " + " ".join(p["measured"] for p in parts)
    else:
        if not args.data_dir:
            sys.exit("error: --data-dir is required unless --render")
        from task2.train import train_model

        root = DataPaths.resolve(args.data_dir).root
        base = din_config(overrides={**parse_overrides(args.set), "num_threads": args.threads})
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            data = subset(root, Path(tmp) / "data", args.train_rows, None)
            provided = data / C.ITEM_INFO.relpath
            infos = {} if args.no_provided else {"provided": provided}
            for spec in args.item_info:
                name, sep, path = spec.partition("=")
                if not sep or not Path(path).is_file():
                    sys.exit(f"error: --item-info {spec!r}: want NAME=PATH of an existing file")
                infos[name] = Path(path)
            if args.random:
                infos["random"] = random_item_info(Path(tmp) / "random.parquet", provided)
            n_train = read_parquet_metadata(data / C.TRAIN.relpath, what="train").num_rows
            n_valid = read_parquet_metadata(data / C.VALID.relpath, what="valid").num_rows
            rep = {"head": f"Data: {root} ({n_train:,} train / {n_valid:,} valid rows), {args.epochs} epochs, "
                           f"{args.threads} torch threads, device {args.device}.",
                   "config": base.to_flat(), "oracle_valid_auc": oracle_auc(root),  # valid is never cut
                   "rows": rows}
            for seed in [int(s) for s in args.seeds.split(",")]:
                cfg = base.replace("train", seed=seed)
                for name, path in infos.items():
                    t0 = time.perf_counter()
                    res = train_model(cfg, data, path, Path(tmp) / f"{name}-{seed}", device=args.device,
                                      max_epochs=args.epochs, quiet=True)
                    rows.append({"item_info": name, "path": str(path), "seed": seed, "epochs": len(res["history"]),
                                 "valid_auc": [round(h["valid_auc"], 5) for h in res["history"]],
                                 "best_valid_auc": round(res["best_valid_auc"], 5), "best_epoch": res["best_epoch"],
                                 "samples_per_s": round(res["samples_per_s"], 1),
                                 "wall_s": round(time.perf_counter() - t0, 1)})
                    print(f"{name:18} seed {seed}: valid AUC {rows[-1]['valid_auc']} "
                          f"{rows[-1]['samples_per_s']:,.0f} samples/s {rows[-1]['wall_s']} s", flush=True)
                    rep["measured"] = stamp(sys.argv)
                    if args.json:
                        Path(args.json).write_text(json.dumps(rep, indent=2))
    lines = report_lines(rep)
    print("\n".join(lines))
    if args.doc:
        how = "Rendered" if args.render else "Measured"
        write_doc_block(Path(args.doc), args.block,
                        ["_Generated by `bench/bench_item_info_din.py --doc`; do not edit by hand. "
                         f"{stamp(sys.argv).replace('Measured', how, 1)}_", "", *lines])


if __name__ == "__main__":
    main()

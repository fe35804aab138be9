"""Ablation of the main model: each component switched off in turn, N seeds each, on one data
set; prints mean and sd of the best valid AUC over seeds, the best epoch, how far valid AUC
fell after its best epoch, and the delta against the full model (and the generator's oracles).

    python bench/bench_ablation.py --data-dir /tmp/sample --seeds 3 --max-epochs 4
    python bench/bench_ablation.py --data-dir /tmp/sample --only full \\
        --variant "lr2e-3=learning_rate=2.0e-3" --variant "no_codes=code_sizes=[]"

Results go to OUT/results.jsonl as each run ends; a rerun with the same --out skips the
(variant, seed) pairs already there, so an interrupted bench resumes. `--jobs 2` runs two
trainings at once (each with --num-threads threads).

Figures: docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmctr.io import environment  # noqa: E402
from mmctr.paths import DataPaths  # noqa: E402
from mmctr.runs import fall_after_best  # noqa: E402
from mmctr.sample import summary  # noqa: E402

# name -> config overrides; "full" is the config as it is, each other one removes one component
ABLATIONS = {
    "full": [],
    "no_transformer": ["n_layers=0"],
    "no_dcnv2": ["cross_layers=0"],
    "no_codes": ["code_sizes=[]"],
}
# bench-only keys (not config keys): applied to the optimiser after the Trainer is built
BENCH_KEYS = ("id_lr_scale",)


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'name=key=value;key=value' -> (name, ['key=value', ...])."""
    name, _, sets = text.partition("=")
    if not name or not sets:
        raise SystemExit(f"error: --variant {text!r}: write NAME=KEY=VALUE[;KEY=VALUE]")
    return name, [s for s in sets.split(";") if s]


def train_one(job: dict) -> dict:
    """One training run (in a worker process); returns its per-epoch valid AUCs."""
    import torch

    from task2.config import load_config, parse_overrides
    from task2.train import Trainer

    sets = [s for s in job["sets"] if s.split("=", 1)[0] not in BENCH_KEYS]
    bench = dict(s.split("=", 1) for s in job["sets"] if s.split("=", 1)[0] in BENCH_KEYS)
    over = parse_overrides(sets + [f"seed={job['seed']}", f"max_epochs={job['max_epochs']}",
                                   f"num_threads={job['num_threads']}", "device=cpu"])
    cfg = load_config(job["config"], over)
    torch.set_num_threads(job["num_threads"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, job["data_dir"], job.get("item_info"), tmp, quiet=True)
        if "id_lr_scale" in bench:  # what a param-group change in task2/train.py would do
            ids = {id(p) for p in trainer.core.id_parameters()}
            rest = [p for p in trainer.core.parameters() if id(p) not in ids]
            lr = cfg.train.learning_rate
            trainer.opt = torch.optim.Adam([
                {"params": rest, "lr": lr},
                {"params": trainer.core.id_parameters(), "lr": lr * float(bench["id_lr_scale"])}])
        s = trainer.fit()
        test_auc = _test_auc(tmp, job["data_dir"])
    aucs = [row["valid_auc"] for row in s["history"]]
    return {"variant": job["variant"], "seed": job["seed"], "sets": job["sets"], "aucs": aucs,
            "best_auc": s["best_valid_auc"], "best_epoch": s["best_epoch"], "params": s["params"],
            "samples_per_s": s["samples_per_s"], "test_auc": test_auc}


def _test_auc(run: str, data_dir: str) -> float | None:
    """Test AUC of the run's best checkpoint against a generated sample's sample_truth labels
    (None on data without them)."""
    import pyarrow.csv as pcsv

    from mmctr.metrics import roc_auc
    from mmctr.sample import read_truth
    from task2.predict import predict_run

    try:
        _, labels = read_truth(data_dir, "test")
    except (FileNotFoundError, OSError):
        return None
    entry = predict_run(run, data_dir, "task2", device="cpu")
    probs = pcsv.read_csv(Path(run) / entry["path"]).column(entry["column"]).to_numpy()
    return roc_auc(labels, probs)


def table(results: list[dict], order: list[str], oracles: dict, ref: str = "full", name: str = "variant") -> str:
    """One line per variant: seeds, mean ± sd best valid AUC, best epoch, drop after the best (mean, max),
    delta against `ref`, gap to the sequence-only oracle, parameters, the per-seed AUCs."""
    by = {v: [r for r in results if r["variant"] == v] for v in order}
    mean_of = {v: statistics.fmean(r["best_auc"] for r in rs) for v, rs in by.items() if rs}
    base = mean_of.get(ref)
    lines = [f"{name:26} {'seeds':>5} {'valid AUC':>16} {'best ep':>7} {'drop after (max)':>16} "
             f"{'vs ' + ref:>8} {'vs seq oracle':>13} {'test AUC':>8} {'params':>9}  per seed"]
    for v, rs in by.items():
        if not rs:
            continue
        falls = [fall_after_best(r["aucs"]) for r in rs]
        aucs = [r["best_auc"] for r in rs]
        sd = statistics.stdev(aucs) if len(aucs) > 1 else float("nan")
        delta = f"{mean_of[v] - base:+.4f}" if base is not None and v != ref else "-"
        gap = (f"{mean_of[v] - oracles['seq']:+.4f}" if oracles.get("seq") is not None else "-")
        tests = [r["test_auc"] for r in rs if r.get("test_auc") is not None]
        test = f"{statistics.fmean(tests):.4f}" if tests else "-"
        lines.append(f"{v:26} {len(rs):>5} {mean_of[v]:>9.4f} ± {sd:.4f} "
                     f"{statistics.fmean(r['best_epoch'] for r in rs):>7.1f} "
                     f"{statistics.fmean(falls):>9.4f} ({max(falls):.4f}) "
                     f"{delta:>8} {gap:>13} {test:>8} {rs[0]['params']:>9,}  " + " ".join(f"{a:.4f}" for a in aucs))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--config", default="transformer_dcn_small")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--max-epochs", type=int, default=4)
    ap.add_argument("--only", help="comma-separated ablation names (default: all; 'none': only --variant ones)")
    ap.add_argument("--variant", action="append", default=[], help="extra variant NAME=KEY=VALUE[;KEY=VALUE]")
    ap.add_argument("--set", action="append", default=[], help="override for every variant, KEY=VALUE")
    ap.add_argument("--item-info", help="item_info.parquet to train on (default: the data's own)")
    ap.add_argument("--out", default="runs/bench_ablation", help="results.jsonl goes here")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--num-threads", type=int, default=1)
    args = ap.parse_args()

    root = DataPaths.resolve(args.data_dir).root
    names = [] if args.only == "none" else args.only.split(",") if args.only else list(ABLATIONS)
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise SystemExit(f"error: --only {unknown}: known ablations are {', '.join(ABLATIONS)}")
    variants = {n: ABLATIONS[n] for n in names} | dict(parse_variant(v) for v in args.variant)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = [json.loads(line) for line in results_path.read_text().splitlines()] if results_path.is_file() else []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = []
    for seed in seeds:  # seed-major: a cut-short bench still has every variant at seed 1
        for name, sets in variants.items():
            sets = sets + args.set
            if any(r["variant"] == name and r["seed"] == seed and r["sets"] == sets for r in done):
                continue
            jobs.append({"variant": name, "sets": sets, "seed": seed, "config": args.config, "data_dir": str(root),
                         "max_epochs": args.max_epochs, "num_threads": args.num_threads,
                         "item_info": args.item_info})
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(train_one, jobs):
            done.append(r)
            with open(results_path, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{r['variant']} seed {r['seed']}: " + " ".join(f"{a:.4f}" for a in r["aucs"])
                  + f"  test {r['test_auc']}", flush=True)

    try:
        info = summary(root)
        oracles = {"seq": info.get("valid_seq_oracle_auc"), "full": info.get("valid_oracle_auc")}
    except (FileNotFoundError, OSError):
        oracles = {}
    results = [r for r in done if r["seed"] in seeds and r["variant"] in variants
               and r["sets"] == variants[r["variant"]] + args.set]
    print(f"machine: {environment()}")
    item_info = args.item_info or "the data's own"
    print(f"data: {root}  item_info: {item_info}  config: {args.config}  seeds: {list(seeds)}  "
          f"max epochs: {args.max_epochs}  "
          f"oracle valid AUC: {oracles.get('full')}  sequence-only oracle: {oracles.get('seq')}")
    print(table(results, list(variants), oracles))


if __name__ == "__main__":
    main()

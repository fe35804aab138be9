"""Benchmark the fixed DIN's two engines side by side: the kit's (task2) and the organisers'
FuxiCTR 2.3.7 DIN (`make fuxictr-env`), same data, same config, same epochs, several seeds.

Two modes. Independent (default): each engine initialises and shuffles from the seed its own
way, so the gap mixes engine and seed noise. `--lockstep`: per seed, FuxiCTR starts from the
kit model's initial weights (task1.fuxictr_engine.kit_state_to_fuxictr) and both engines see
the same batches in the same order (one permutation of the train rows per epoch, drawn from
the seed); only dropout masks (separate RNG streams; `--no-dropout` removes them) and float
rounding differ, so the gap measures the engines. Float rounding alone grows over the steps (Adam
and batch norm amplify it), so the engine `kit-control` (the kit again, lockstep, its initial
weights scaled by 1 + 1e-7 and its dropout masks drawn from another seed: what differs between
the two engines) gives the floor an engine gap is read against.

Prints valid AUC per epoch and training samples/s of each run, then per engine the mean ± sd
over seeds, and the AUC gap kit - fuxictr (goal: within 0.005). The seed is not a Task-1
tunable key; the bench varies it only to show the noise. `--doc docs/task1.md` also rewrites
the block `<!-- bench:din_engines -->` ... `<!-- /bench:din_engines -->` there (with
`--doc-block NAME`, the block `bench:NAME`).

    python bench/bench_din_engines.py --data-dir /tmp/fx-data --train-rows 20000 --epochs 2 \\
        --seeds 20242025,1,2 --doc docs/task1.md
    python bench/bench_din_engines.py --data-dir /tmp/fx-data --train-rows 60000 --epochs 2 \\
        --lockstep --engines kit,kit-control,fuxictr --set batch_size=1024 --doc docs/task1.md \\
        --doc-block din_engines_lockstep
    python bench/bench_din_engines.py --data-dir data/full --device cuda --epochs 3  # on a GPU
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmctr import contract as C  # noqa: E402
from mmctr.io import environment, read_parquet, read_parquet_metadata, write_parquet  # noqa: E402
from mmctr.paths import DataPaths  # noqa: E402
from task1.evaluate import DIN_CONFIG, din_config  # noqa: E402
from task2.config import load_config, parse_overrides  # noqa: E402

FIXED_SEED = 20242025


def subset(root: Path, out: Path, n_train: int | None, n_valid: int | None) -> Path:
    """A copy of the data's train/valid (first rows), test and item_info, so both engines read the
    same (the kit's Trainer checks all three splits against the contract)."""
    (out / C.CTR_DIR).mkdir(parents=True)
    for table, n in ((C.TRAIN, n_train), (C.VALID, n_valid), (C.TEST, None), (C.ITEM_INFO, None)):
        t = read_parquet(root / table.relpath, what=table.name)
        write_parquet(out / table.relpath, t.slice(0, n) if n else t)
    return out


CONTROL = "kit-control"
PERTURB = 1e-7


def engine_fn(name: str):
    if name in ("kit", CONTROL):
        from task2.train import train_model
        return train_model
    if name == "fuxictr":
        from task1.fuxictr_engine import train_fuxictr
        return train_fuxictr
    sys.exit(f"error: unknown engine '{name}' (kit, {CONTROL}, fuxictr)")


def lockstep_order(seed: int, n_rows: int, epochs: int) -> np.ndarray:
    """(epochs, n_rows): the train rows of each epoch, in the order both engines take them."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n_rows) for _ in range(epochs)]).astype(np.int64)


def train_kit_lockstep(cfg, data, info, out: Path, device: str, max_epochs: int, order: np.ndarray,
                       init_path: Path | None, perturb: float = 0.0) -> dict:
    """The kit engine (task2.train.Trainer) taking its batches from `order`; its initial weights
    go to `init_path` (if given) under FuxiCTR's names before the first step; with `perturb` they
    are then scaled by 1 + perturb and the dropout masks come from another seed."""
    import task2.train as T
    from task1.fuxictr_engine import kit_state_to_fuxictr

    cfg = cfg.replace("runtime", device=device).replace("runtime", max_epochs=max_epochs)
    trainer = T.Trainer(cfg, data, info, out, quiet=True)
    if init_path is not None:
        np.savez(init_path, **kit_state_to_fuxictr(trainer.core, cfg["embedding_dim"]))
    if perturb:  # the control: float-sized change of the start, and other dropout masks
        with torch.no_grad():
            for p in trainer.core.parameters():
                p.mul_(1 + perturb)
        torch.manual_seed(cfg["seed"] + 1)
    epochs = iter(order)
    shuffled = T.iter_batches

    def batches(n, batch_size, generator=None, shuffle=True, **kw):
        if generator is None or not shuffle:  # validation: row order, as before
            return shuffled(n, batch_size, generator=generator, shuffle=shuffle, **kw)
        return list(torch.from_numpy(next(epochs)).split(batch_size))

    T.iter_batches = batches
    try:
        return trainer.fit()
    finally:
        T.iter_batches = shuffled


def mean_sd(xs) -> tuple[float, float]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def pm(xs, fmt="{:.4f}") -> str:
    m, s = mean_sd(xs)
    return f"{fmt.format(m)} ± {fmt.replace('+', '').format(s)}"


def stamp(argv) -> str:
    """Date, commit, machine, load and command of a measurement (for a generated doc block)."""
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = " (uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    env = environment()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    cmd = " ".join(shlex.quote(a) for a in ["python", os.path.relpath(argv[0], ROOT), *argv[1:]])
    return (f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC at commit {commit}{dirty}: `{cmd}`. "
            f"Machine: {env.get('platform')}, torch {env.get('torch')}, {os.cpu_count()} CPU cores visible "
            f"(shared with other jobs; load average 1/5/15 min at the end: {load}), GPU {env.get('cuda') or 'none'}.")


def write_doc_block(page: Path, name: str, body: list[str]) -> None:
    """Replace the block `<!-- bench:NAME -->` ... `<!-- /bench:NAME -->` of page (appended if absent)."""
    text = page.read_text()
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = begin + "\n" + "\n".join(body).rstrip() + "\n" + end
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = (pattern.sub(lambda _: block, text, count=1) if pattern.search(text)
            else text.rstrip() + "\n\n" + block + "\n")
    page.write_text(text)
    print(f"ok: {page} <- bench:{name}")


def report_lines(rows: list[dict], cfg, head: str) -> list[str]:
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    n_ep = max(r["epochs"] for r in rows)
    lines = [head, "", "| engine | seed | " + " | ".join(f"AUC ep {e + 1}" for e in range(n_ep))
             + " | best AUC | samples/s | wall s |", "|---|---|" + "---|" * n_ep + "---|---|---|"]
    for r in rows:
        aucs = [f"{a:.4f}" for a in r["valid_auc"]] + ["-"] * (n_ep - len(r["valid_auc"]))
        lines.append(f"| {r['engine']} | {r['seed']} | " + " | ".join(aucs)
                     + f" | {r['best_valid_auc']:.4f} | {r['samples_per_s']:,.0f} | {r['wall_s']:.0f} |")
    lines += ["", f"Mean ± sd over seeds ({len({r['seed'] for r in rows})}):", "",
              "| engine | " + " | ".join(f"AUC ep {e + 1}" for e in range(n_ep)) + " | best AUC | samples/s |",
              "|---|" + "---|" * n_ep + "---|---|"]
    by = {e: [r for r in rows if r["engine"] == e] for e in engines}
    for e, rs in by.items():
        per_ep = [pm([r["valid_auc"][i] if i < len(r["valid_auc"]) else None for r in rs]) for i in range(n_ep)]
        lines.append(f"| {e} | " + " | ".join(per_ep) + f" | {pm([r['best_valid_auc'] for r in rs])} | "
                     f"{pm([r['samples_per_s'] for r in rs], '{:,.0f}')} |")
    if {"kit", "fuxictr"} <= set(by):
        kit = {r["seed"]: r for r in by["kit"]}
        fx = {r["seed"]: r for r in by["fuxictr"]}
        seeds = [s for s in kit if s in fx]
        gaps = [[kit[s]["valid_auc"][i] - fx[s]["valid_auc"][i] for s in seeds
                 if i < min(len(kit[s]["valid_auc"]), len(fx[s]["valid_auc"]))] for i in range(n_ep)]
        best = [kit[s]["best_valid_auc"] - fx[s]["best_valid_auc"] for s in seeds]
        m, _ = mean_sd(best)
        speed = (mean_sd([r["samples_per_s"] for r in by["kit"]])[0]
                 / mean_sd([r["samples_per_s"] for r in by["fuxictr"]])[0])
        lines += ["", ("Gap kit - fuxictr, same seed, mean ± sd over seeds: " if len(seeds) > 1 else
                   "Gap kit - fuxictr, same seed: ")
                  + ", ".join(f"epoch {i + 1} {pm(g, '{:+.4f}')}" for i, g in enumerate(gaps) if g)
                  + f"; best AUC {pm(best, '{:+.4f}')}; largest |gap| of a seed {max(map(abs, best)):.4f} "
                  f"({'within' if max(map(abs, best)) < 0.005 else 'outside'} the 0.005 goal). "
                  f"Speed: kit {speed:.1f}x fuxictr samples/s."]
    if {"kit", CONTROL} <= set(by):
        kit = {r["seed"]: r for r in by["kit"]}
        ctl = {r["seed"]: r for r in by[CONTROL]}
        seeds = [s for s in kit if s in ctl]
        gaps = [[kit[s]["valid_auc"][i] - ctl[s]["valid_auc"][i] for s in seeds
                 if i < min(len(kit[s]["valid_auc"]), len(ctl[s]["valid_auc"]))] for i in range(n_ep)]
        best = [kit[s]["best_valid_auc"] - ctl[s]["best_valid_auc"] for s in seeds]
        lines += ["", f"Floor, kit - {CONTROL} (the same engine, same batches, initial weights "
                  f"× (1 + {PERTURB:g}), dropout masks from another seed): "
                  + ", ".join(f"epoch {i + 1} {pm(g, '{:+.4f}')}" for i, g in enumerate(gaps) if g)
                  + f"; best AUC {pm(best, '{:+.4f}')}."]
    lines += ["", f"Config (both engines): batch_size {cfg['batch_size']}, net_dropout {cfg['net_dropout']}, "
              f"attention_dropout {cfg['attention_dropout']}, "
              f"learning_rate {cfg['learning_rate']}, embedding_regularizer {cfg['embedding_regularizer']}, "
              f"net_regularizer {cfg['net_regularizer']}; everything else din_baseline.yaml."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", help="the data root (required unless --render)")
    ap.add_argument("--item-info", default=None, help="default: the data's provided item_info.parquet")
    ap.add_argument("--train-rows", type=int, default=None, help="first N train rows (CPU: keep small)")
    ap.add_argument("--valid-rows", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--engines", default="kit,fuxictr")
    ap.add_argument("--seeds", default=str(FIXED_SEED), help="comma list; each engine runs once per seed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each engine")
    ap.add_argument("--set", action="append", default=[],
                    help="a key the Task-1 track may change, for both engines, e.g. batch_size=1024")
    ap.add_argument("--lockstep", action="store_true",
                    help="same initial weights and the same batches in the same order in both engines")
    ap.add_argument("--no-dropout", action="store_true",
                    help="net_dropout and attention_dropout 0 in both (not a Task-1 setting: a dev check)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--doc", help="rewrite the bench:din_engines block of this markdown page")
    ap.add_argument("--doc-block", default="din_engines", help="the block's name (bench:NAME)")
    ap.add_argument("--render", help="comma list of --json files of earlier (possibly cut-short) runs of one "
                                     "setting: render them, no training")
    args = ap.parse_args()
    if args.render:
        paths = [Path(p) for p in args.render.split(",")]
        parts = [json.loads(p.read_text()) for p in paths]
        rep, seen = dict(parts[0]), {}
        for part in parts:
            for r in part["rows"]:
                if seen.setdefault((r["engine"], r["seed"]), r)["valid_auc"] != r["valid_auc"]:
                    sys.exit(f"error: --render: two different {r['engine']} runs of seed {r['seed']}")
        rep["rows"] = list(seen.values())
        path = paths[0]
        r0 = rep["rows"][0]
        head = rep.get("head") or (f"Data: first {r0['train_rows']:,} train / {r0['valid_rows']:,} valid rows, "
                                   f"{max(r['epochs'] for r in rep['rows'])} epochs.")
        measured = " ".join(p.get("measured", "") for p in parts).strip() or (
            f"{path} (written "
            f"{dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc):%Y-%m-%d %H:%M} UTC "
            "by an earlier version of this bench, which did not record its command).")
        engines = {r["engine"] for r in rep["rows"]}
        paired = [r for r in rep["rows"] if {q["engine"] for q in rep["rows"] if q["seed"] == r["seed"]} == engines]
        rank = {s: i for i, s in enumerate(dict.fromkeys(r["seed"] for r in paired))}
        paired.sort(key=lambda r: (rank[r["seed"]], ["kit", CONTROL, "fuxictr"].index(r["engine"])))
        cut = len(rep["rows"]) - len(paired)
        if cut:
            head += f" {cut} run(s) of a seed the other engine did not finish are left out."
        lines = report_lines(paired, rep["config"], f"{head} Rendered from {measured}")
        print("\n".join(lines))
        if args.doc:
            write_doc_block(Path(args.doc), args.doc_block,
                            ["_Generated by `bench/bench_din_engines.py --doc`; do not edit by hand. "
                             f"{stamp(sys.argv).replace('Measured', 'Rendered', 1)}_", "", *lines])
        return

    if not args.data_dir:
        sys.exit("error: --data-dir is required unless --render")
    root = DataPaths.resolve(args.data_dir).root
    over = {**parse_overrides(args.set), "num_threads": args.threads}
    base = din_config(overrides=over)  # refuses keys the Task-1 track fixes
    if args.no_dropout:
        base = load_config(DIN_CONFIG, {**over, "net_dropout": 0.0, "attention_dropout": 0.0})
    seeds = [int(s) for s in args.seeds.split(",")]
    engines = {e: engine_fn(e) for e in args.engines.split(",")}
    if CONTROL in engines and not args.lockstep:
        sys.exit(f"error: {CONTROL} runs only with --lockstep")
    if args.lockstep:  # the kit first: it writes the initial weights FuxiCTR starts from
        engines = dict(sorted(engines.items(), key=lambda kv: kv[0] != "kit"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(root, Path(tmp) / "data", args.train_rows, args.valid_rows)
        info = Path(args.item_info) if args.item_info else data / C.ITEM_INFO.relpath
        n_train = read_parquet_metadata(data / C.TRAIN.relpath, what="train").num_rows
        n_valid = read_parquet_metadata(data / C.VALID.relpath, what="valid").num_rows

        def head() -> str:
            mode = ("Lockstep: per seed both engines start from the same weights (the kit's initialisation) "
                    "and take the same batches in the same order; only dropout masks and float rounding "
                    "differ." if args.lockstep else
                    "Independent seeds: each engine initialises and shuffles its own way.")
            return (f"{mode} Data: {root} (first {n_train:,} train / {n_valid:,} valid rows), item_info "
                    f"{'provided' if not args.item_info else args.item_info}, {args.epochs} epochs, "
                    f"{args.threads} torch thread(s) per run, device {args.device}, engines run one after the other.")
        if args.lockstep and ("kit" not in engines or len(engines) < 2):
            sys.exit(f"error: --lockstep needs the kit and another engine: --engines kit,fuxictr (or {CONTROL})")
        for seed in seeds:
            cfg = base.replace("train", seed=seed)
            order = lockstep_order(seed, n_train, args.epochs) if args.lockstep else None
            if order is not None:
                np.save(Path(tmp) / f"order-{seed}.npy", order)
            for engine, train in engines.items():
                t0 = time.perf_counter()
                out, init = Path(tmp) / f"{engine}-{seed}", Path(tmp) / f"init-{seed}.npz"
                if order is None:
                    res = train(cfg, data, info, out, device=args.device, max_epochs=args.epochs, quiet=True)
                elif engine == "kit":
                    res = train_kit_lockstep(cfg, data, info, out, args.device, args.epochs, order, init)
                elif engine == CONTROL:
                    res = train_kit_lockstep(cfg, data, info, out, args.device, args.epochs, order, None, PERTURB)
                else:
                    res = train(cfg, data, info, out, device=args.device, max_epochs=args.epochs, quiet=True,
                                init_weights=init, order=Path(tmp) / f"order-{seed}.npy")
                rows.append({"engine": engine, "seed": seed, "train_rows": n_train, "valid_rows": n_valid,
                             "epochs": len(res["history"]),
                             "valid_auc": [round(h["valid_auc"], 5) for h in res["history"]],
                             "best_valid_auc": round(res["best_valid_auc"], 5),
                             "samples_per_s": round(res["samples_per_s"], 1),
                             "wall_s": round(time.perf_counter() - t0, 1)})
                r = rows[-1]
                print(f"{engine:8} seed {seed}: valid AUC {r['valid_auc']} {r['samples_per_s']:,.0f} samples/s "
                      f"{r['wall_s']} s", flush=True)
                if args.json:  # after each run: a cut-short bench keeps what it measured
                    Path(args.json).write_text(json.dumps({"config": base.to_flat(), "rows": rows, "head": head(),
                                                           "measured": stamp(sys.argv)}, indent=2))
    lines = report_lines(rows, base, head())
    print(f"machine: {environment()}")
    print("\n".join(lines))
    if args.doc:
        write_doc_block(Path(args.doc), args.doc_block,
                        ["_Generated by `bench/bench_din_engines.py --doc`; do not edit by hand. "
                         f"{stamp(sys.argv)}_", "", *lines])


if __name__ == "__main__":
    main()

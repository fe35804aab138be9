"""`task1 tune`: grid or random search over the five DIN keys the Task-1 track may change.

The space is a YAML file like the organisers' tuner (task1/configs/tune_din.yaml): a list of
values per key. Each trial trains the fixed DIN through task1.evaluate on the new item_info
(and the provided one, for the difference) and is appended to `<out>/tune_results.csv` as soon
as it ends. The best point is then trained again with other seeds to show the noise
(measurement only: the winner keeps the fixed seed), and `<out>/best_din.yaml` is the fixed
DIN config with the winner's values, which `make track1` uses when it is there.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import random
import time
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import yaml
from pydantic import Field, model_validator

from mmctr import yamlconfig
from mmctr.config import Section, build, merge, read_yaml
from mmctr.errors import KitError
from mmctr.io import atomic_path, check_writable
from mmctr.paths import refuse_data_write
from mmctr.tracks import TASK1_TUNABLE

CONFIG_DIR = Path(__file__).parent / "configs"
RESULTS_NAME = "tune_results.csv"
BEST_NAME = "best_din.yaml"
SUMMARY_NAME = "tune_summary.json"
DIN_BASELINE = Path(__file__).resolve().parents[1] / "task2" / "configs" / "din_baseline.yaml"
FIELDS = ("trial", "kind", "seed", *TASK1_TUNABLE, "new_valid_auc", "provided_valid_auc",
          "new_minus_provided", "best_epoch", "epochs", "seconds")


class Space(Section):
    """Values to try per key; a key left out keeps the fixed DIN's value."""

    embedding_regularizer: Optional[list[float]] = Field(None, min_length=1, max_length=64)
    net_regularizer: Optional[list[float]] = Field(None, min_length=1, max_length=64)
    net_dropout: Optional[list[float]] = Field(None, min_length=1, max_length=64)
    learning_rate: Optional[list[float]] = Field(None, min_length=1, max_length=64)
    batch_size: Optional[list[int]] = Field(None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _ranges(self):
        for key, lo, hi in (("embedding_regularizer", 0, 1), ("net_regularizer", 0, 1), ("net_dropout", 0, 0.99),
                            ("learning_rate", 1e-7, 1), ("batch_size", 1, 1 << 20)):
            for v in getattr(self, key) or ():
                if not lo <= v <= hi:
                    raise ValueError(f"{key} value {v} is outside [{lo}, {hi}]")
        return self

    def grid(self) -> list[dict]:
        keys = [k for k in TASK1_TUNABLE if getattr(self, k)]
        return [dict(zip(keys, vals)) for vals in itertools.product(*(getattr(self, k) for k in keys))]


class TuneCfg(Section):
    search: Literal["grid", "random"] = "grid"
    trials: Optional[int] = Field(None, ge=1, le=10_000)  # random: how many; grid: cap (None = all)
    seeds: int = Field(3, ge=1, le=20)  # runs of the best point (its own seed + others)
    max_epochs: Optional[int] = Field(None, ge=1, le=1000)
    seed: int = Field(0, ge=0)  # random search's sampler
    space: Space = Field(default_factory=Space)


def load_tune_config(name_or_path="tune_din", overrides: dict | None = None) -> TuneCfg:
    path = yamlconfig.config_path(name_or_path, CONFIG_DIR)
    raw = read_yaml(path)
    return build(TuneCfg, merge(raw, overrides or {}), str(path))


def points(cfg: TuneCfg) -> list[dict]:
    grid = cfg.space.grid()
    if cfg.search == "grid":
        return grid[: cfg.trials] if cfg.trials else grid
    rng = random.Random(cfg.seed)
    n = cfg.trials or min(len(grid), 10)
    if n >= len(grid):
        return rng.sample(grid, len(grid))
    return rng.sample(grid, n)


def append_row(path: Path, row: dict) -> None:
    """Append one CSV row atomically: the whole file is rewritten beside and moved in place, so a
    killed run leaves either the old or the new table, never half a line."""
    old = path.read_text() if path.is_file() else ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    if not old:
        w.writeheader()
    w.writerow(row)
    with atomic_path(path) as tmp:
        tmp.write_text(old + buf.getvalue())


def _fixed_seed() -> int:
    return int(yamlconfig.read_mapping(DIN_BASELINE).get("seed", 20242025))


def write_best(path: Path, point: dict, source: str) -> dict:
    """The fixed DIN config file with the winner's values for the tunable keys."""
    raw = yamlconfig.read_mapping(DIN_BASELINE)
    raw.update(point)
    text = (f"# written by `task1 tune` ({source}): the fixed DIN with the best of the search for\n"
            f"# {', '.join(TASK1_TUNABLE)}; everything else as {DIN_BASELINE.name}.\n"
            + yaml.safe_dump(raw, sort_keys=False))
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return raw


def tune(data_dir, item_info, out, cfg: TuneCfg, baseline=None, device=None, quiet: bool = False,
         num_threads: Optional[int] = None) -> dict:
    """Run the search; returns the summary (best point, its seed spread)."""
    from mmctr.paths import DataPaths

    from .evaluate import din_config, evaluate

    paths = DataPaths.resolve(data_dir)
    out = Path(out)
    refuse_data_write(out, paths.root, "--out")
    check_writable(out / RESULTS_NAME, "--out")
    if not Path(item_info).is_file():
        raise KitError(f"--item-info not found: {item_info}")
    trials = points(cfg)
    runtime = {"num_threads": num_threads} if num_threads is not None else {}
    for p in trials:  # every point checked by the fixed-DIN guard before any training
        din_config(overrides={**p, **runtime})
    results_path = out / RESULTS_NAME
    rows = []
    for i, point in enumerate(trials):
        t0 = time.perf_counter()
        rep = evaluate(data_dir, item_info, out / f"trial_{i:03d}", baseline=baseline, max_epochs=cfg.max_epochs,
                       device=device, quiet=True, overrides={**point, **runtime})
        s, new = rep["summary"], rep["runs"]["new"]
        row = {"trial": i, "kind": "search", "seed": _fixed_seed(), **point,
               "new_valid_auc": s["new_valid_auc"], "provided_valid_auc": s.get("provided_valid_auc"),
               "new_minus_provided": s.get("new_minus_provided"), "best_epoch": new["best_epoch"],
               "epochs": new["epochs"], "seconds": round(time.perf_counter() - t0, 1)}
        append_row(results_path, row)
        rows.append(row)
        if not quiet:
            print(f"trial {i + 1}/{len(trials)} {json.dumps(point)}: new valid AUC {row['new_valid_auc']:.5f}",
                  flush=True)
    best = max(rows, key=lambda r: r["new_valid_auc"])
    point = {k: best[k] for k in TASK1_TUNABLE if k in best and k in trials[0]}
    aucs = [best["new_valid_auc"]] + _seed_runs(paths.root, item_info, out, point, cfg, device, runtime,
                                                results_path, best["trial"], quiet)
    write_best(out / BEST_NAME, point, f"{len(rows)} {cfg.search} trials, best new valid AUC "
                                       f"{best['new_valid_auc']:.5f}")
    summary = {"trials": len(rows), "search": cfg.search, "best_point": point, "best_trial": best["trial"],
               "best_valid_auc": best["new_valid_auc"], "seed_aucs": aucs,
               "seed_mean": round(float(np.mean(aucs)), 5), "seed_std": round(float(np.std(aucs)), 5),
               "best_config": str((out / BEST_NAME).resolve()), "results": str(results_path.resolve()),
               "item_info": str(Path(item_info).resolve())}
    from mmctr import ledger
    from mmctr.io import write_json

    summary[ledger.LEDGER] = ledger.snapshot()
    write_json(out / SUMMARY_NAME, summary)
    return summary


def _seed_runs(root, item_info, out, point, cfg, device, runtime, results_path, trial, quiet) -> list:
    """The best point with other seeds, on the new item_info only (a noise measurement: the
    submitted config keeps the fixed seed)."""
    from task2.train import train_model

    from .evaluate import din_config

    aucs = []
    base_seed = _fixed_seed()
    for k in range(1, cfg.seeds):
        seed = base_seed + k
        din = din_config(overrides={**point, **runtime})
        din = din.replace("train", seed=seed)
        t0 = time.perf_counter()
        res = train_model(din, root, item_info, out / f"best_seed_{seed}", device=device,
                          max_epochs=cfg.max_epochs, quiet=True)
        auc = round(float(res["best_valid_auc"]), 5)
        aucs.append(auc)
        append_row(results_path, {"trial": trial, "kind": "seed", "seed": seed, **point, "new_valid_auc": auc,
                                  "best_epoch": res["best_epoch"], "epochs": len(res["history"]),
                                  "seconds": round(time.perf_counter() - t0, 1)})
        if not quiet:
            print(f"best point, seed {seed}: new valid AUC {auc:.5f}", flush=True)
    return aucs


def tuned_config(out) -> Optional[Path]:
    """`<out>/best_din.yaml` when a tune run wrote one."""
    p = Path(out) / BEST_NAME
    return p if p.is_file() else None


"""`task1 evaluate`: the fixed baseline DIN (challenge.md, Task-1 track) trained on the new
item_info and on the provided one (optionally on random 128-D embeddings too), same seed and
settings; reports the validation AUCs and, on generated sample data, the oracle AUC.

Two engines train it: `kit` (task2's DIN, this environment) and `fuxictr` (the organisers' DIN
on FuxiCTR 2.3.7 in its own environment, task1/fuxictr_engine.py); same config, same report."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr import ledger
from mmctr.ledger import LEDGER
from mmctr.io import check_writable, file_sha256, write_json
from mmctr.item_info import read_item_info, write_item_info
from mmctr.paths import DataPaths, refuse_data_write
from mmctr.rundir import Task1Dir
from mmctr.tracks import TASK1_TUNABLE

DIN_CONFIG = "din_baseline"
REPORT_NAME = "report.json"
ENGINES = ("kit", "fuxictr")


def din_config(sets=(), overrides: dict | None = None):
    """The fixed DIN config (a task2 RunConfig); only the keys the Task-1 track may tune (and
    runtime keys) change."""
    from task2.config import RUNTIME_KEYS, load_config, parse_overrides

    over = {**parse_overrides(sets), **(overrides or {})}
    bad = sorted(k for k in over if k not in TASK1_TUNABLE and k not in RUNTIME_KEYS)
    if bad:
        raise KitError(f"the Task-1 track fixes the DIN: cannot change {bad}; it may change only "
                       f"{', '.join(TASK1_TUNABLE)} (and runtime keys {', '.join(RUNTIME_KEYS)})")
    return load_config(DIN_CONFIG, over)


def random_item_info(path, like, seed: int = 20242025) -> Path:
    """Random 128-D vectors with the tags of `like`, at the norm task1 writes by default (`like`'s
    mean row norm, fusion.output_norm: provided): the floor."""
    from .fuse import provided_norm

    tags, emb = read_item_info(like)
    rng = np.random.default_rng(seed)
    r = rng.normal(size=emb.shape).astype(np.float32)
    r *= np.float32(provided_norm(emb)) / np.linalg.norm(r, axis=1, keepdims=True)
    r[0] = 0
    write_item_info(path, tags, r)
    return Path(path)


def oracle_auc(root: Path):
    """Validation AUC of the true click probabilities, when the data is a generated sample."""
    from mmctr.sample import TRUTH_DIR, summary

    if not (root / TRUTH_DIR / "summary.json").is_file():
        return None
    return summary(root).get("valid_oracle_auc")


def evaluate(data_dir, item_info, out, baseline=None, with_random: bool = False, sets=(),
             max_epochs=None, device=None, quiet: bool = False, overrides: dict | None = None,
             engine: str = "kit") -> dict:
    """Train the fixed DIN with `engine` on each item_info; write and return report.json."""
    if engine not in ENGINES:
        raise KitError(f"unknown engine '{engine}': choose one of {', '.join(ENGINES)}")
    if engine == "fuxictr":
        from .fuxictr_engine import fuxictr_python
        from .fuxictr_engine import train_fuxictr as train_model

        fuxictr_python()  # a missing environment fails before any work
    else:
        from task2.train import train_model

    paths = DataPaths.resolve(data_dir)
    out = Path(out)
    refuse_data_write(out, paths.root)
    check_writable(out, "--out")
    new = Path(item_info)
    base = Path(baseline) if baseline else paths.require(C.ITEM_INFO)
    new_tags, new_emb = read_item_info(new)
    base_tags, _ = read_item_info(base)
    if len(new_tags) != len(base_tags):
        raise KitError(f"{new} has {len(new_tags) - 1} items but {base} has {len(base_tags) - 1}")
    cfg = din_config(sets, overrides)
    variants = {"new": new, "provided": base}
    if with_random:
        variants["random"] = random_item_info(Task1Dir(out / "random").item_info, base)
    runs = {}
    for name, path in variants.items():
        run_dir = out / (f"din_{name}" if engine == "kit" else f"{engine}_{name}")
        if not quiet:
            print(f"== fixed DIN ({engine} engine) on {name} item_info ({path})")
        res = train_model(cfg, paths.root, path, run_dir, device=device, max_epochs=max_epochs, quiet=quiet)
        runs[name] = {"item_info": str(path.resolve()), "sha256": file_sha256(path),
                      "best_valid_auc": res["best_valid_auc"], "best_epoch": res["best_epoch"],
                      "epochs": len(res["history"]), "history": res["history"],
                      "samples_per_s": res.get("samples_per_s")}
    summary = {f"{k}_valid_auc": round(v["best_valid_auc"], 5) for k, v in runs.items()}
    summary["new_minus_provided"] = round(runs["new"]["best_valid_auc"] - runs["provided"]["best_valid_auc"], 5)
    oracle = oracle_auc(paths.root)
    if oracle is not None:
        from mmctr.sample import latent_recovery

        summary["oracle_valid_auc"] = round(oracle, 5)
        # training-free: held-out R² of the generator's item latents from each embedding
        summary["latent_r2"] = {k: round(latent_recovery(paths.root, read_item_info(v["item_info"])[1])["item"], 4)
                                for k, v in runs.items()}
    summary["tags_match_provided"] = bool(np.array_equal(new_tags, base_tags))
    summary["engine"] = engine
    report = {"summary": summary, "runs": runs, "din_config": cfg, "max_epochs": max_epochs, "engine": engine,
              "data_dir": str(paths.root), LEDGER: ledger.snapshot()}
    write_json(out / REPORT_NAME, report)
    return report

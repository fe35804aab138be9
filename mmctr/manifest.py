"""Run manifests: what a run read, which models it used, its config, timings and results.

task1 writes `<out>/item_info.manifest.json`, task2 writes `<run>/manifest.json`; submission
reads both to check the rules. Keys shared by all manifests are declared here.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
from pathlib import Path

from . import ledger
from .errors import KitError
from .io import environment, file_sha256, write_json

KIND = "kind"  # "task1" | "task2"
CONFIG = "config"
INPUTS = "inputs"  # {path: sha256} of every data file the run read
MODELS = "models"  # [{"name", "source", "sha256"}] pretrained weights used (task1 only)
TIMINGS = "timings"
OUTPUTS = "outputs"  # {path: sha256} of every file the run wrote
LEDGER = ledger.LEDGER  # what the writing process imported and spawned (mmctr.ledger.snapshot)
PATH, SHA256 = "path", "sha256"

# Run folder layout ($(RUNS), e.g. runs/task1_2/): what task1 and task2 write, submission reads.
TASK1_DIR, TASK2_DIR = "task1", "task2"
TASK1_ITEM_INFO = "item_info.parquet"
TASK1_MANIFEST = "item_info.manifest.json"
TASK2_MANIFEST = "manifest.json"

# task2 manifest keys (written by `task2 train` / `task2 predict`).
N_MODELS = "n_models"
ITEM_INFO = "item_info"  # {"path", "sha256"}: the item_info task2 trained on
PRETRAINED = "pretrained"  # [] pretrained weights used by the CTR model (must stay empty)
CHECKPOINT = "checkpoint"  # {"path" (relative to the run dir, e.g. "best.pt"), "sha256"}
PREDICTION = "prediction"  # the run's own RUN/prediction.csv: {"path", "sha256", "rows", "column", "track",
#   "test_path", "test_sha256", "checkpoints_loaded": [{"path", "sha256"}] (what predict actually
#   loaded), "checkpoints_used" (= len(checkpoints_loaded))}; other --out files go to "side_predictions"
CHECKPOINTS_USED = "checkpoints_used"
RUNTIME = "runtime"  # runtime-only config keys (device, epochs budget...), kept apart from "config"
CONFIG_SOURCE = "config_source"  # task2 config's own bookkeeping key, not a hyperparameter


def git_commit() -> str | None:
    """The kit's git commit; in the Docker image (no .git) the MMCTR_GIT_COMMIT it was built from."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    return head or os.environ.get("MMCTR_GIT_COMMIT") or None


def hash_inputs(paths) -> dict:
    return {str(Path(p).resolve()): file_sha256(p) for p in paths}


def portable(paths: dict, data_root, base) -> dict:
    """{path: value} with each path written relative to the data root (a data file) or to `base`
    (the manifest's folder) when it lies in base's parent (the run folder), else absolute: a run
    folder copied or moved, or data mounted elsewhere, still names the same files."""
    data_root, base = Path(data_root).resolve(), Path(base).resolve()
    out = {}
    for raw, value in paths.items():
        p = Path(raw).resolve()
        if p == data_root or data_root in p.parents:
            out[p.relative_to(data_root).as_posix()] = value
        elif p == base.parent or base.parent in p.parents:
            out[Path(os.path.relpath(p, base)).as_posix()] = value
        else:
            out[str(raw)] = value
    return out


def write_manifest(path, kind: str, **fields) -> dict:
    """Write a manifest atomically, adding environment, time, code version and the ledger."""
    doc = {KIND: kind, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "environment": environment(), "git_commit": git_commit(), **fields}
    doc.setdefault(LEDGER, ledger.snapshot())
    write_json(path, doc)
    return doc


def read_manifest(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise KitError(f"run manifest not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise KitError(f"run manifest {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise KitError(f"run manifest {path} nests deeper than JSON readers allow: not a manifest") from None

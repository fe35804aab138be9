"""Run manifests: what a run read, which models it used, its config, timings and results.

task1 writes `<out>/item_info.manifest.json`, task2 writes `<run>/manifest.json`; submission
reads both to check the rules. Keys shared by all manifests are declared here.
"""
from __future__ import annotations

import datetime as _dt
import json
import subprocess
from pathlib import Path

from .errors import KitError
from .io import environment, file_sha256, write_json

KIND = "kind"  # "task1" | "task2"
CONFIG = "config"
INPUTS = "inputs"  # {path: sha256} of every data file the run read
MODELS = "models"  # [{"name", "source", "sha256"}] pretrained weights used (task1 only)
TIMINGS = "timings"
OUTPUTS = "outputs"  # {path: sha256} of every file the run wrote


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def hash_inputs(paths) -> dict:
    return {str(Path(p).resolve()): file_sha256(p) for p in paths}


def write_manifest(path, kind: str, **fields) -> dict:
    """Write a manifest atomically, adding environment, time and code version."""
    doc = {KIND: kind, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "environment": environment(), "git_commit": _git_commit(), **fields}
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

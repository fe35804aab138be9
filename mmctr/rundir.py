"""Run folders: every file name a kit command writes into one, every manifest key, manifest
read/write, checkpoint save/load and the lock of a task2 run folder. Nothing else in the kit
spells these names (tests/test_rundir.py greps for them).

A track folder ($(RUNS), e.g. runs/task1_2/) holds `task1/` (what `task1 build` wrote: `Task1Dir`)
and `task2/` (a `task2 train` run: `RunDir`); submission reads both through `TrackDir`.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import contract as C
from . import ledger
from .errors import KitError
from .io import atomic_path, check_writable, environment, file_sha256, write_json
from .paths import is_inside, refuse_data_write

# ------------------------------------------------------------------ manifest keys
KIND = "kind"  # "task1" | "task2"
CONFIG = "config"
INPUTS = "inputs"  # {path: sha256} of every data file the run read
MODELS = "models"  # [{"name", "source", "sha256"}] pretrained weights used (task1 only)
TIMINGS = "timings"
OUTPUTS = "outputs"  # {path: sha256} of every file the run wrote
PATH, SHA256 = "path", "sha256"
# task2 (written by `task2 train` / `task2 predict`)
N_MODELS = "n_models"
ITEM_INFO = "item_info"  # {"path", "root": "data" | "run", "sha256"}: the item_info task2 trained on
DATA_FILES = "data_files"  # {path relative to the data root: sha256}
PRETRAINED = "pretrained"  # [] pretrained weights used by the CTR model (must stay empty)
CHECKPOINT = "checkpoint"  # {"path": "best.pt", "sha256"}
LAST_CHECKPOINT = "last_checkpoint"  # {"path": "last.pt", "sha256"}
RESUMED = "resumed"  # [{"from_epoch", "changed": {key: [old, new]}}]
PREDICTION = "prediction"  # the run's own prediction: {"path", "sha256", "rows", "column", "track",
#   "test_path", "test_sha256", "checkpoints_loaded": [{"path", "sha256"}] (what predict actually
#   loaded), "checkpoints_used" (= len(checkpoints_loaded))}; other --out files go to "side_predictions"
SIDE_PREDICTIONS = "side_predictions"
CHECKPOINTS_LOADED = "checkpoints_loaded"
CHECKPOINTS_USED = "checkpoints_used"
RUNTIME = "runtime"  # runtime-only config keys (device, epochs budget...), kept apart from "config"
CONFIG_SOURCE = "config_source"  # task2 config's own bookkeeping key, not a hyperparameter
LOG = "log"  # the run's log file name
LEDGER = ledger.LEDGER  # what the writing process imported and spawned (mmctr.ledger.snapshot)

# ------------------------------------------------------------------ file names
TASK1_DIR, TASK2_DIR = "task1", "task2"
TASK1_ITEM_INFO = Path(C.ITEM_INFO.relpath).name  # task1 writes the organisers' file name
TASK1_MANIFEST = "item_info.manifest.json"
TASK1_REPORT = "item_info.report.png"
TASK1_LOG = "build.log"
BEST, LAST = "best.pt", "last.pt"
HISTORY, LOG_FILE, MANIFEST = "history.jsonl", "train.log", "manifest.json"
TRAINING_PNG = "training.png"
LOCK_FILE = ".train.lock"


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


def write_manifest(path, kind: str, **fields) -> dict:
    """Every kit manifest is written here: atomically, with environment, time and code version."""
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


def locate(path, data_root, run_dir) -> dict:
    """A file as a manifest records it, without the machine's absolute paths where it can: relative
    to the data root (a data file), else relative to `run_dir` when it lies in run_dir's parent (the
    track folder: task1's item_info beside a task2 run), else absolute. A run folder copied or
    moved with its track folder, or data mounted elsewhere, still names the same files."""
    p = Path(path).resolve()
    rel = is_inside(p, (Path(data_root).resolve(),))
    if rel is not None:
        return {PATH: rel.as_posix(), "root": "data"}
    run_dir = Path(run_dir).resolve()
    if is_inside(p, (run_dir.parent,)) is not None:
        return {PATH: Path(os.path.relpath(p, run_dir)).as_posix(), "root": "run"}
    return {PATH: str(p), "root": "run"}


def portable(paths: dict, data_root, base) -> dict:
    """{path: value} with each path as `locate` records it (the manifests' `inputs` / `outputs`)."""
    return {locate(raw, data_root, base)[PATH]: value for raw, value in paths.items()}


def resolve_located(entry: dict, data_root, run_dir) -> Path:
    """Inverse of `locate`."""
    return (Path(data_root) if entry.get("root", "data") == "data" else Path(run_dir)) / entry[PATH]


def save_checkpoint(path, state: dict) -> str:
    """Write `state` (tensors, numbers, strings, lists, dicts) atomically; return its sha256."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return file_sha256(path)


def load_checkpoint(path, sha256: str | None = None, map_location="cpu") -> dict:
    """Load a checkpoint with weights_only=True (never unpickles code), after checking its sha256
    when one is given: a swapped or edited file is refused before a byte of it is deserialised."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise KitError(f"checkpoint not found: {path}")
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256:
            raise KitError(f"{path}: sha256 {actual[:12]}... differs from the manifest's "
                           f"{sha256[:12]}...: the checkpoint changed after training; refusing to load it")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal or corruption is the user's file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KitError(f"{path} is not a plain-data checkpoint (tensors and plain values only): {reason}") from None
    if not isinstance(state, dict):
        raise KitError(f"{path}: a checkpoint must hold a dict, got {type(state).__name__}")
    return state


def _file(name: str) -> property:
    return property(lambda self: self.path / name)


class _Folder:
    """A folder a kit command writes; its files are properties (`_file(NAME)`)."""

    def __init__(self, path):
        self.path = Path(path)

    def read_manifest(self) -> dict:
        return read_manifest(self.manifest)


class RunDir(_Folder):
    """A `task2 train` run folder."""

    best, last, history, log = _file(BEST), _file(LAST), _file(HISTORY), _file(LOG_FILE)
    manifest, prediction, plot = _file(MANIFEST), _file(C.SUBMISSION_FILE), _file(TRAINING_PNG)

    @property
    def own_files(self) -> tuple[Path, ...]:
        """What train wrote: a side prediction must not overwrite these."""
        return self.best, self.last, self.manifest, self.history, self.log

    def check_out(self, data_root) -> None:
        """Before any work: the folder can be written and lies outside the (read-only) data."""
        refuse_data_write(self.path, data_root, "--out")
        check_writable(self.path, "--out")

    def clear(self) -> None:
        """A fresh run leaves nothing of an older run in its folder."""
        for p in (*self.own_files, self.prediction, self.plot):
            p.unlink(missing_ok=True)

    def write_manifest(self, **fields) -> dict:
        return write_manifest(self.manifest, "task2", **fields)

    def append_history(self, row: dict) -> None:
        with open(self.history, "a") as f:
            f.write(json.dumps(row) + "\n")

    def save_checkpoint(self, name: str, state: dict) -> dict:
        """Write `name` (BEST or LAST); return the manifest entry that pins it."""
        return {PATH: name, SHA256: save_checkpoint(self.path / name, state)}

    def load_checkpoint(self, name: str, pinned: str | None, map_location="cpu") -> dict:
        return load_checkpoint(self.path / name, sha256=pinned, map_location=map_location)

    @contextmanager
    def lock(self):
        """Hold the folder for one `task2 train`; a second one into it is one KitError naming the pid
        of the first. The lock (fcntl.flock) goes with the process, however it ends."""
        self.path.mkdir(parents=True, exist_ok=True)
        f = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "unknown"
            f.close()
            raise KitError(f"{self.path} is in use by another `task2 train` (pid {pid}); "
                           "wait for it to end or train into another --out") from None
        try:
            f.truncate(0)
            f.write(str(os.getpid()))
            f.flush()
            yield self
        finally:
            f.close()


class Task1Dir(_Folder):
    """What `task1 build --out DIR` writes."""

    item_info, manifest = _file(TASK1_ITEM_INFO), _file(TASK1_MANIFEST)
    report, log = _file(TASK1_REPORT), _file(TASK1_LOG)


@dataclass(frozen=True)
class TrackDir:
    """A track folder ($(RUNS)): task1/ and task2/ side by side."""

    runs: Path

    @classmethod
    def of(cls, runs) -> "TrackDir":
        return cls(Path(runs).expanduser().resolve())

    task1 = property(lambda self: Task1Dir(self.runs / TASK1_DIR))
    task2 = property(lambda self: RunDir(self.runs / TASK2_DIR))
    item_info = property(lambda self: self.task1.item_info)
    task1_manifest = property(lambda self: self.task1.manifest)
    task2_manifest = property(lambda self: self.task2.manifest)
    prediction = property(lambda self: self.task2.prediction)

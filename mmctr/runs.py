"""Results across runs: `<runs root>/results.csv`, one row per train / evaluate / tune run.

Each row says when and from which commit a run ran, what it trained (track, model, config
hash, item_info sha256) and what it reached (best valid AUC, its logloss, samples/s, wall
seconds). `python -m mmctr runs` prints the table, best run per track first.

A text cell that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab or CR first) is
written with a leading single quote (OWASP CSV injection), and read back without it; so is each
piece after a ';', where a ';'-separator locale (German Excel) splits the cell.
"""
from __future__ import annotations

import csv
import datetime as _dt
import fcntl
import hashlib
import io
import json
import math
import os
import re
from pathlib import Path

from .errors import KitError
from .io import atomic_path

RESULTS_NAME = "results.csv"
RUNS_ROOT_ENV = "MMCTR_RUNS_ROOT"
KINDS = ("train", "evaluate", "tune")
COLUMNS = ("time", "kind", "track", "model", "label", "git_commit", "config_hash", "item_info_sha256",
           "epochs", "best_epoch", "best_valid_auc", "valid_logloss", "samples_per_s", "wall_s", "run_dir")
FLOAT_COLUMNS = ("best_valid_auc", "valid_logloss", "samples_per_s", "wall_s")
INT_COLUMNS = ("epochs",)
EPOCH_COLUMNS = ("best_epoch",)  # 2, or 1.25 with several validations per epoch
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def csv_safe(value):
    """A text cell with each ';'-separated piece that a spreadsheet would run as a formula
    prefixed with a single quote; a piece already starting with one gets another, so
    `csv_unquote` gives back every value. Numbers (also as text: '-5') are left alone."""
    if not isinstance(value, str) or _NUMBER.fullmatch(value):
        return value
    return ";".join("'" + p if p.startswith("'") or p.lstrip().startswith(FORMULA_START) else p
                    for p in value.split(";"))


def csv_unquote(text: str) -> str:
    """The value `csv_safe` was given: one leading single quote off each ';'-separated piece."""
    return ";".join(p[1:] if p.startswith("'") else p for p in text.split(";"))


def runs_root_for(run_dir) -> Path:
    """Where a run's row goes: $MMCTR_RUNS_ROOT, else the nearest enclosing folder named `runs`
    (`runs/task1_2/task2` -> `runs`), else the run folder's parent."""
    if os.environ.get(RUNS_ROOT_ENV):
        return Path(os.environ[RUNS_ROOT_ENV])
    run_dir = Path(run_dir).absolute()
    for parent in run_dir.parents:
        if parent.name == "runs":
            return parent
    return run_dir.parent


def config_hash(config: dict) -> str:
    """Short, order-independent hash of a config dict: equal configs, equal hashes."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _cell(name: str, value) -> str:
    if value is None:
        return ""
    if name in FLOAT_COLUMNS:
        v = float(value)
        if not math.isfinite(v):
            return ""
        return f"{v:.6f}" if name in ("best_valid_auc", "valid_logloss") else f"{v:.1f}"
    if name in INT_COLUMNS:
        return str(int(value))
    if name in EPOCH_COLUMNS:
        return str(epoch_number(value))
    text = str(value)
    if "\n" in text or "\r" in text:
        raise KitError(f"results.csv field {name} holds a line break: {text!r}")
    return csv_safe(text)


def _header_line() -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(COLUMNS)
    return buf.getvalue()


def append_result(runs_root, **fields) -> dict:
    """Append one row to `<runs_root>/results.csv` (header written on first use); return the row.

    The file is locked, copied with the new row to a temporary file and moved into place,
    so concurrent runs never interleave and a reader never sees half a row. Unknown fields
    or a file with another header are one KitError naming the file.
    """
    unknown = sorted(set(fields) - set(COLUMNS))
    if unknown:
        raise KitError(f"append_result: unknown field(s) {unknown}; columns are {', '.join(COLUMNS)}")
    if fields.get("kind") not in KINDS:
        raise KitError(f"append_result: kind must be one of {', '.join(KINDS)}, got {fields.get('kind')!r}")
    fields.setdefault("time", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    row = {c: _cell(c, fields.get(c)) for c in COLUMNS}
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([row[c] for c in COLUMNS])
    line = buf.getvalue()

    root = Path(runs_root)
    path = root / RESULTS_NAME
    try:
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f".{RESULTS_NAME}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            old = path.read_text() if path.is_file() else ""
            if old:
                _check_header(path, old.splitlines()[0])
                if not old.endswith("\n"):
                    raise KitError(f"{path} ends in a partial row; repair or move it aside")
            with atomic_path(path) as tmp:
                tmp.write_text((old or _header_line()) + line)
    except (OSError, UnicodeDecodeError) as exc:
        raise KitError(f"results table {path}: cannot append a row: {exc}") from None
    return row


def _check_header(path: Path, first_line: str) -> None:
    if first_line.rstrip("\r\n") != _header_line().rstrip("\n"):
        raise KitError(f"{path} has header {first_line!r}, expected {','.join(COLUMNS)}; "
                       f"move it aside to start a new table")


def check_results(runs_root, data_dir=None) -> None:
    """Before a run starts: KitError if `<runs_root>/results.csv` could not take its row
    (another header, not writable, or inside the organisers' data dir)."""
    from .io import check_writable
    from .paths import refuse_data_write

    path = Path(runs_root) / RESULTS_NAME
    refuse_data_write(path, data_dir, what="results table")
    check_writable(path, "results table")
    if path.is_file():
        try:
            with open(path) as f:
                first = f.readline()
        except (OSError, UnicodeDecodeError) as exc:
            raise KitError(f"results table {path} cannot be read: {exc}") from None
        _check_header(path, first)


def read_results(runs_root, track: str | None = None, model: str | None = None) -> list[dict]:
    """Rows of `<runs_root>/results.csv` (typed), optionally only one track / model."""
    path = Path(runs_root) / RESULTS_NAME
    if not path.is_file():
        raise KitError(f"no results table at {path} (a train or evaluate run writes it)")
    try:
        with open(path, newline="") as f:
            return _typed_rows(path, csv.DictReader(f), track, model)
    except (UnicodeDecodeError, csv.Error) as exc:  # a damaged or foreign file: one line, not a traceback
        raise KitError(f"{path} is not a results table the kit can read: {exc}") from None


def _typed_rows(path: Path, reader, track, model) -> list[dict]:
    """Typed rows of a results.csv reader (one KitError naming the line of a bad cell)."""
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise KitError(f"{path} has columns {reader.fieldnames}, expected {','.join(COLUMNS)}")
    rows = []
    for i, raw in enumerate(reader, start=2):
        if None in raw or None in raw.values():  # DictReader's filler for missing / extra fields
            n = len([v for k, v in raw.items() if k is not None and v is not None])
            raise KitError(f"{path} line {reader.line_num}: {n} fields, a row has {len(COLUMNS)} (a partial or "
                           "damaged row, e.g. a run killed while writing it): remove that line")
        try:
            row = {c: (csv_unquote(raw[c] or "") or None) for c in COLUMNS}
            for c in FLOAT_COLUMNS:
                row[c] = float(row[c]) if row[c] is not None else None
            for c in INT_COLUMNS:
                row[c] = int(row[c]) if row[c] is not None else None
            for c in EPOCH_COLUMNS:
                row[c] = epoch_number(row[c]) if row[c] is not None else None
        except (TypeError, ValueError) as exc:
            raise KitError(f"{path} line {i}: {exc}") from None
        rows.append(row)
    return [r for r in rows if (track is None or r["track"] == track) and (model is None or r["model"] == model)]


def ranked(rows: list[dict]) -> list[dict]:
    """Tracks ordered by their best AUC; in each track, runs by valid AUC (best first)."""
    def auc(r):
        return r["best_valid_auc"] if r["best_valid_auc"] is not None else -math.inf

    best = {}
    for r in rows:
        best[r["track"]] = max(best.get(r["track"], -math.inf), auc(r))
    return sorted(rows, key=lambda r: (-best[r["track"]], r["track"] or "", -auc(r), r["time"] or ""))


def format_table(rows: list[dict]) -> str:
    """A plain-text table of result rows, best per track first."""
    shown = ("track", "kind", "model", "label", "best_valid_auc", "valid_logloss", "epochs", "samples_per_s",
             "wall_s", "config_hash", "item_info_sha256", "git_commit", "time", "run_dir")
    heads = {"best_valid_auc": "valid AUC", "valid_logloss": "logloss", "samples_per_s": "samples/s",
             "wall_s": "wall s", "config_hash": "config", "item_info_sha256": "item_info", "git_commit": "commit"}

    def text(r, c):
        v = r[c]
        if v is None:
            return "-"
        if c in ("best_valid_auc", "valid_logloss"):
            return f"{v:.5f}"
        if c in ("samples_per_s", "wall_s"):
            return f"{v:,.0f}"
        if c in ("item_info_sha256", "git_commit"):
            return v[:10]
        return str(v)

    cells = [[heads.get(c, c) for c in shown]] + [[text(r, c) for c in shown] for r in ranked(rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(shown))]
    right = {i for i, c in enumerate(shown) if c in FLOAT_COLUMNS + INT_COLUMNS + EPOCH_COLUMNS}
    lines = ["  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))).rstrip()
             for row in cells]
    return "\n".join(lines)


# ------------------------------------------------------------------ rows from what a run wrote

def read_history(run_dir) -> list[dict]:
    """Rows of `<run>/history.jsonl` (one JSON object per epoch); [] when the file is absent."""
    from .rundir import RunDir

    path = RunDir(run_dir).history
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KitError(f"{path} line {i} is not JSON: {exc}") from None
        if not isinstance(row, dict) or "epoch" not in row:
            raise KitError(f"{path} line {i} has no epoch: {line[:80]!r}")
        rows.append(row)
    return rows


def best_row(history: list[dict], best_epoch) -> dict:
    return next((h for h in history if h.get("epoch") == best_epoch), {})


def epoch_number(value) -> int | float:
    """An epoch as history writes it: 3 for a whole epoch, 2.25 for a validation inside one."""
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"epoch {value!r} is not a number")
    return int(v) if v == int(v) else round(v, 4)


def fall_after_best(aucs: list[float]) -> float:
    """How far valid AUC fell below its best in the validations after the best one (0 if none)."""
    best = max(range(len(aucs)), key=aucs.__getitem__)
    return max(0.0, aucs[best] - min(aucs[best:]))


def epochs_run(history: list[dict]) -> int:
    """Epochs a history spans (its rows are validations; several per epoch when evals_per_epoch > 1)."""
    last = history[-1].get("epoch") if history else 0
    return math.ceil(last) if isinstance(last, (int, float)) and math.isfinite(last) else len(history)


def _median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _relative(path, root) -> str:
    return os.path.relpath(Path(path).absolute(), Path(root).absolute())


def infer_track(model: str, item_info, data_dir) -> str:
    """task2 when the provided item_info was used, else task1 for the DIN, task1_2 for other models."""
    from . import contract as C
    from .io import file_sha256
    from .paths import DataPaths

    provided = DataPaths.resolve(data_dir).table(C.ITEM_INFO)
    item_info = Path(item_info) if item_info else provided
    same = provided.is_file() and item_info.is_file() and (
        item_info.resolve() == provided.resolve() or file_sha256(item_info) == file_sha256(provided))
    if same:
        return "task2"
    return "task1" if model == "din" else "task1_2"


def record_train(run_dir, track: str, wall_s: float, runs_root=None, kind: str = "train",
                 label: str | None = None) -> dict:
    """Append the row of a finished task2 run (read from its manifest.json and history.jsonl)."""
    from .rundir import CONFIG, ITEM_INFO, SHA256, RunDir

    run_dir = Path(run_dir)
    root = Path(runs_root) if runs_root else runs_root_for(run_dir)
    m = RunDir(run_dir).read_manifest()
    history = read_history(run_dir) or m.get("history") or []
    best = best_row(history, m.get("best_epoch"))
    return append_result(
        root, kind=kind, track=track, model=m.get("model"), label=label, git_commit=m.get("git_commit"),
        config_hash=config_hash(m.get(CONFIG) or {}), item_info_sha256=(m.get(ITEM_INFO) or {}).get(SHA256),
        epochs=epochs_run(history), best_epoch=m.get("best_epoch"), best_valid_auc=m.get("best_valid_auc"),
        valid_logloss=best.get("valid_logloss"), samples_per_s=m.get("samples_per_s"), wall_s=wall_s,
        run_dir=_relative(run_dir, root))


def record_evaluate(report: dict, out, wall_s: float, runs_root=None) -> list[dict]:
    """Append one row per DIN of a `task1 evaluate` report (new / provided / random item_info)."""
    from .rundir import CONFIG, TIMINGS, RunDir, git_commit

    out = Path(out)
    root = Path(runs_root) if runs_root else runs_root_for(out)
    runs = report.get("runs") or {}
    rows = []
    commit = git_commit()
    engine = report.get("engine")  # task1 evaluate --engine kit|fuxictr, when the report says
    for name, run in runs.items():
        history = run.get("history") or []
        run_dir = out / f"din_{name}" if (out / f"din_{name}").is_dir() else out
        seconds = wall_s / max(len(runs), 1)  # a share of the command's time, unless the run timed itself
        config = report.get("din_config") or {}
        if RunDir(run_dir).manifest.is_file():  # the run's own model config and timings
            manifest = RunDir(run_dir).read_manifest()
            timings = manifest.get(TIMINGS) or {}
            seconds = sum(v for v in timings.values() if isinstance(v, (int, float))) or seconds
            config = manifest.get(CONFIG) or config
        rows.append(append_result(
            root, kind="evaluate", track="task1", model="din", git_commit=commit,
            label=f"item_info={name}" + (f" engine={engine}" if engine not in (None, "kit") else ""),
            config_hash=config_hash(config), item_info_sha256=run.get("sha256"),
            epochs=run.get("epochs", epochs_run(history)), best_epoch=run.get("best_epoch"),
            best_valid_auc=run.get("best_valid_auc"),
            valid_logloss=best_row(history, run.get("best_epoch")).get("valid_logloss"),
            samples_per_s=_median([h.get("samples_per_s") for h in history]),
            wall_s=seconds, run_dir=_relative(run_dir, root)))
    return rows


# ------------------------------------------------------------------ CLI hooks (after a run)

def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun job (only rank 0 records and draws)."""
    return os.environ.get("RANK", "0") in ("", "0")


def _note(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr)


def _draw(fn, *args) -> Path | None:
    """A picture is a by-product: failing to draw one warns and keeps the run's exit status."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - any drawing failure: one warning line, the run stands
        _note(f"warning: no picture from {fn.__name__}({', '.join(map(str, args))}): "
              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return None


def after_train(run_dir, data_dir, item_info, wall_s: float, runs_root) -> dict:
    """`task2 train` finished: append its results row and draw `<run>/training.png`."""
    from .plots import plot_history
    from .rundir import RunDir

    model = RunDir(run_dir).read_manifest().get("model")
    row = record_train(run_dir, infer_track(model, item_info, data_dir), wall_s, runs_root)
    png = _draw(plot_history, run_dir)
    _note(f"results: {Path(runs_root) / RESULTS_NAME} (+1 row)" + (f"; picture: {png}" if png else ""))
    return row


def after_evaluate(report: dict, out, wall_s: float, runs_root) -> list[dict]:
    """`task1 evaluate` finished: one results row per DIN it trained, a training.png for each."""
    from .plots import plot_history
    from .rundir import RunDir

    rows = record_evaluate(report, out, wall_s, runs_root)
    pngs = [_draw(plot_history, d) for d in sorted(Path(out).glob("din_*")) if RunDir(d).history.is_file()]
    _note(f"results: {Path(runs_root) / RESULTS_NAME} (+{len(rows)} rows); pictures: "
          + ", ".join(str(p) for p in pngs if p))
    return rows


def after_build(out) -> Path | None:
    """`task1 build` finished: draw `<out>/item_info.report.png` from its manifest."""
    from .plots import plot_task1

    png = _draw(plot_task1, out)
    if png:
        _note(f"picture: {png}")
    return png


# ------------------------------------------------------------------ the end-of-demo summary

def read_steps(path) -> list[tuple[str, float]]:
    """`name seconds` lines written by the Makefile around each step."""
    steps = []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            steps.append((parts[0], float(parts[1])))
        except (IndexError, ValueError):
            raise KitError(f"{path} line {i}: expected 'step seconds', got {line!r}") from None
    return steps


def summary_block(runs_dir, data_dir, zip_path=None, track: str = "task1_2", steps=None) -> str:
    """What a finished track folder reached: valid AUC, test AUC of the zip against the sample's
    labels next to the oracle and the sequence-only oracle, time per step, where things are."""
    try:
        return _summary_block(runs_dir, data_dir, zip_path, track, steps)
    except (TypeError, ValueError) as exc:  # a hand-edited manifest: a string where a number was
        raise KitError(f"{runs_dir}: a run manifest holds a value of the wrong type ({exc})") from None


def _summary_block(runs_dir, data_dir, zip_path, track, steps) -> str:
    from .rundir import TrackDir
    from .paths import DataPaths
    from .sample import TRUTH_DIR, read_truth, summary

    runs_dir = Path(runs_dir)
    root = DataPaths.resolve(data_dir).root
    lines = [f"== summary: {runs_dir} (track {track}, data {root})"]
    track_dir = TrackDir(runs_dir)
    m2 = track_dir.task2.read_manifest()
    hist = m2.get("history") or []
    lines.append(f"valid AUC        {m2.get('best_valid_auc', float('nan')):.4f}  ({m2.get('model')}, best epoch "
                 f"{m2.get('best_epoch')} of {epochs_run(hist)}, {m2.get('samples_per_s') or 0:,.0f} samples/s)")
    aucs = [row.get("valid_auc") for row in hist if isinstance(row, dict)]
    if aucs and all(isinstance(a, (int, float)) for a in aucs):
        best = max(range(len(aucs)), key=aucs.__getitem__)
        lines.append(f"after the best   valid AUC fell {fall_after_best(aucs):.4f} at most in the "
                     f"{len(aucs) - best - 1} validation(s) before the run stopped")
    truth = (root / TRUTH_DIR / "summary.json").is_file()
    if truth:
        s = summary(root)
        seq = s.get('valid_seq_oracle_auc', float('nan'))
        lines.append(f"valid oracle     {s.get('valid_oracle_auc', float('nan')):.4f}  "
                     f"sequence-only oracle {seq:.4f}  "
                     f"(gap to it {seq - m2.get('best_valid_auc', float('nan')):+.4f})")
    if zip_path is not None and Path(zip_path).is_file():
        if truth:
            from submission.prediction import score  # the organisers' scoring, as `submission score`

            _, labels = read_truth(root, "test")
            test_auc = score(zip_path, labels, track)
            lines.append(f"test AUC         {test_auc:.4f}  (the zip, scored as `python -m submission score`)")
            lines.append(f"test oracle      {s.get('test_oracle_auc', float('nan')):.4f}  "
                         f"sequence-only oracle {s.get('test_seq_oracle_auc', float('nan')):.4f}  "
                         f"(gap to the oracle {s.get('test_oracle_auc', float('nan')) - test_auc:+.4f})")
        else:
            lines.append("test AUC         - (real data: the test labels are the organisers')")
    if track_dir.task1_manifest.is_file():
        fusion = (track_dir.task1.read_manifest().get("parts") or {}).get("fusion") or {}
        if fusion.get("holdout_recall_at_10") is not None:
            lines.append(f"task1 recall@10  {fusion['holdout_recall_at_10']:.3f} content -> behaviour "
                         f"(chance {fusion.get('holdout_recall_at_10_chance', float('nan')):.3f})")
    if steps:
        got = read_steps(steps) if not isinstance(steps, list) else steps
        lines.append("time per step    " + ", ".join(f"{n} {s:.0f} s" for n, s in got)
                     + f"; total {sum(s for _, s in got):.0f} s")
    if zip_path is not None:
        lines.append(f"submission zip   {zip_path}" + ("" if Path(zip_path).is_file() else " (missing)"))
        repro = Path(zip_path).with_name(Path(zip_path).stem + "_repro.zip")
        if repro.is_file():
            lines.append(f"repro bundle     {repro}")
    pictures = sorted(p for p in runs_dir.rglob("*.png"))
    if pictures:
        lines.append("pictures         " + "\n                 ".join(str(p) for p in pictures))
    results = runs_root_for(track_dir.task2.path) / RESULTS_NAME
    if results.is_relative_to(Path.cwd()):
        results = results.relative_to(Path.cwd())
    if results.is_file():
        lines.append(f"results table    {results}  (python -m mmctr runs --runs-root {results.parent})")
    return "\n".join(lines)

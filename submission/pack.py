"""`submission pack`: the Codabench zip (prediction.csv at its root, nothing else) and the
reproducibility bundle for the final round (<out stem>_repro.zip)."""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from mmctr import contract as C
from mmctr import manifest as M
from mmctr.errors import KitError
from mmctr.io import atomic_path, environment, file_sha256
from mmctr.paths import DataPaths
from mmctr.tracks import get_track

from . import layout as L
from . import pipeline as P
from .prediction import test_rows, validate_prediction

REPO_ROOT = Path(__file__).resolve().parent.parent
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same files give the same zip bytes
MAX_CODE_FILE = 5 << 20  # code files above this size are left out of the bundle (and listed)
WALK_EXCLUDE = {".git", ".venv", "venv", "data", "runs", "out", "cache", "__pycache__", "build",
                "dist", ".pytest_cache", ".mypy_cache", ".ipynb_checkpoints", "node_modules"}
ENV_FILES = ("requirements.lock", "environment.yml")


def _zip_write(zf: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o755 if executable else 0o644) << 16
    zf.writestr(info, data)


def write_submission_zip(prediction: Path, out: Path) -> str:
    """Write `out` atomically with prediction.csv (exact bytes) at its root; return its sha256."""
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            _zip_write(zf, C.SUBMISSION_FILE, Path(prediction).read_bytes())
        with zipfile.ZipFile(tmp) as zf:  # re-read before it replaces anything
            if zf.namelist() != [C.SUBMISSION_FILE] or zf.testzip() is not None:
                raise KitError(f"{out}: the written zip does not re-read cleanly")
        os.chmod(tmp, 0o644)
    return file_sha256(out)


def _git(*args, cwd=REPO_ROOT) -> str | None:
    try:
        res = subprocess.run(["git", *args], capture_output=True, cwd=cwd, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.decode("utf-8", "replace") if res.returncode == 0 else None


def code_files(root: Path = REPO_ROOT) -> list:
    """The repo's code: git's tracked and not-ignored files, or a walk without venv/data/runs."""
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=root)
    if listed is not None:
        names = sorted({n for n in listed.split("\0") if n})
    else:
        names = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in WALK_EXCLUDE and not d.endswith(".egg-info"))
            rel = Path(dirpath).relative_to(root)
            names += [str(rel / f) for f in sorted(filenames) if not f.endswith((".pyc", ".tmp"))]
    return [n for n in names if (root / n).is_file()]


def _yaml(obj) -> bytes:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=None).encode()


def _pip_freeze() -> bytes | None:
    try:
        res = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                             capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def _run_sh(track: str, data_root: Path, configs: dict) -> str:
    t = get_track(track)
    target = P.make_target(t.name)
    overrides = [f'{var}="$HERE/{path}"' for var, path in configs.items()]
    cmds = "\n".join("  " + P.render_shell(s, "$PY") + " && \\" for s in P.steps(t.name))
    return f"""#!/usr/bin/env bash
# Re-run track {t.name} end to end, as packed. Usage: DATA=/path/to/data ./run.sh [--no-make]
# DATA is the folder holding {C.CTR_DIR}/ (packed with {data_root}).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DATA="${{DATA:-{data_root}}}"
RUNS="${{RUNS:-$HERE/runs/{t.name}}}"
cd "$HERE/code"
if [ "${{1:-}}" != "--no-make" ]; then
  make {target} DATA="$DATA" RUNS="$RUNS" {" ".join(overrides)}
else  # the same steps without make, in the current Python environment
  PY="${{PY:-python}}"
  T1_CONFIG="$HERE/{configs.get("T1_CONFIG", "code/" + P.config_vars(t.name)["T1_CONFIG"])}"
  T2_CONFIG="$HERE/{configs.get(P.t2_config_var(t.name), "code/" + P.config_vars(t.name)["T2_CONFIG"])}"
{cmds}
  true
fi
echo "submission: $RUNS/submission.zip"
"""


def _reproduce_md(track, data_root, test_sha, git, configs, summary, t1, t2, skipped) -> str:
    t = get_track(track)
    target = P.make_target(t.name)
    lines = [f"# Reproduce the {t.column} submission (track {t.name})", "",
             f"Packed {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} from git commit "
             f"`{git['commit'] or 'unknown'}`" + (" with uncommitted changes (the code/ folder holds them)"
                                                  if git["dirty"] else "") + ".", "",
             "## Exact commands", "",
             "From this folder, with the organisers' data (the folder holding "
             f"`{C.CTR_DIR}/`):", "", "```bash", f"DATA={data_root} ./run.sh", "```", "",
             "which runs, inside `code/`:", "", "```bash",
             f"make {target} DATA=$DATA RUNS=../runs/{t.name} " + " ".join(f"{k}=../{v}" for k, v in configs.items()),
             "```", "", "or, step by step (`./run.sh --no-make`, which sets `DATA`, `RUNS`, `T1_CONFIG` "
             "and `T2_CONFIG` to the packed configs under `run/configs/`):", "", "```bash"]
    lines += [P.render_shell(s) for s in P.steps(t.name)]
    lines += ["```", "", "## What this run produced", "",
              f"- test.parquet sha256: `{test_sha}`",
              f"- {C.SUBMISSION_FILE}: {summary['rows']} rows, column `{summary['column']}`, "
              f"sha256 `{summary['prediction_sha256']}`",
              f"- submission.zip sha256: `{summary['zip_sha256']}`"]
    if t2:
        lines += [f"- best validation AUC: {t2.get('best_valid_auc')} (epoch {t2.get('best_epoch')})",
                  f"- CTR model: `{(t2.get(M.CONFIG) or {}).get('model')}`"]
    if t1:
        models = ", ".join(f"{m.get('name')} ({m.get('source')})" for m in t1.get(M.MODELS) or []
                           if isinstance(m, dict)) or "none"
        lines.append(f"- Task-1 pretrained weights: {models}")
    lines += ["", "## Contents", "",
              "- `code/`: the kit's code as packed (git's tracked and not-ignored files)",
              "- `run/`: the run manifests, the exact configs (`run/configs/`), the rule-check report, "
              "`pip-freeze.txt` of the packing environment",
              "- `requirements.lock`, `environment.yml`: the pinned environment "
              "(`pip install -r requirements.lock && pip install --no-deps -e code/`)",
              "- `run.sh`: the commands above"]
    if skipped:
        lines += ["", "Left out of code/ (over 5 MiB): " + ", ".join(f"`{s}`" for s in skipped)]
    return "\n".join(lines) + "\n"


def write_bundle(out: Path, track: str, runs: Path, data_root: Path, summary: dict,
                 report: dict | None) -> dict:
    """Write the reproducibility bundle atomically; return what went in."""
    run = L.RunLayout.of(runs)
    t1 = M.read_manifest(run.task1_manifest) if run.task1_manifest.is_file() else None
    t2 = M.read_manifest(run.task2_manifest) if run.task2_manifest.is_file() else None
    head = M.git_commit()
    status = _git("status", "--porcelain")
    git = {"commit": head, "dirty": bool(status and status.strip())}
    skipped, names = [], []
    configs = {}  # make variable -> path in the bundle
    test_path = DataPaths.resolve(data_root).table(C.TEST)
    test_sha = file_sha256(test_path)
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            def add(name, data, executable=False):
                _zip_write(zf, name, data, executable)
                names.append(name)

            for n in code_files():
                p = REPO_ROOT / n
                if p.stat().st_size > MAX_CODE_FILE:
                    skipped.append(n)
                    continue
                add(f"code/{n}", p.read_bytes(), executable=os.access(p, os.X_OK))
            for n in ENV_FILES:
                if (REPO_ROOT / n).is_file():
                    add(n, (REPO_ROOT / n).read_bytes())
            for doc, path, rel in ((t1, run.task1_manifest, f"run/{L.TASK1_DIR}/{L.TASK1_MANIFEST}"),
                                   (t2, run.task2_manifest, f"run/{L.TASK2_DIR}/{L.TASK2_MANIFEST}")):
                if doc is not None:
                    add(rel, path.read_bytes())
            if t1 is not None and isinstance(t1.get(M.CONFIG), dict):
                configs["T1_CONFIG"] = "run/configs/task1.yaml"
                add(configs["T1_CONFIG"], _yaml({k: v for k, v in t1[M.CONFIG].items()
                                                 if k != L.CONFIG_SOURCE}))
            if t2 is not None and isinstance(t2.get(M.CONFIG), dict):
                var = P.t2_config_var(track)
                configs[var] = "run/configs/task2.yaml"
                runtime = t2.get(L.RUNTIME) if isinstance(t2.get(L.RUNTIME), dict) else {}
                full = {**t2[M.CONFIG], **runtime}  # task2 keeps speed/budget keys apart
                add(configs[var], _yaml({k: v for k, v in full.items() if k != L.CONFIG_SOURCE}))
            if report is not None:
                add("run/check_report.json", (json.dumps(report, indent=2) + "\n").encode())
            freeze = _pip_freeze()
            if freeze:
                add("run/pip-freeze.txt", freeze)
            add("run/environment.json", (json.dumps({"packed_with": environment(), "git": git,
                                                     "argv": sys.argv}, indent=2) + "\n").encode())
            add("run/submission.json", (json.dumps(summary, indent=2) + "\n").encode())
            add("run.sh", _run_sh(track, data_root, configs).encode(), executable=True)
            add("REPRODUCE.md", _reproduce_md(track, data_root, test_sha, git, configs, summary,
                                              t1, t2, skipped).encode())
        os.chmod(tmp, 0o644)
    return {"path": str(out), "sha256": file_sha256(out), "files": len(names), "skipped": skipped,
            "git": git}


def pack(track: str, runs, data_dir, out, prediction=None, run_check: bool = True,
         code_dirs=None, task2_code=None) -> dict:
    """Validate prediction.csv, check the rules, write submission.zip and its repro bundle."""
    from .rules import check

    t = get_track(track)
    paths = DataPaths.resolve(data_dir)
    runs = Path(runs).expanduser()
    if not runs.is_dir():
        raise KitError(f"runs directory not found: {runs} (run `make task1 task2` first)")
    pred = Path(prediction) if prediction else L.RunLayout.of(runs).prediction
    _, n = test_rows(paths.root)
    ps = validate_prediction(pred, n, t.name)
    report = None
    if run_check:
        rep = check(t.name, runs, paths.root, code_dirs=code_dirs, task2_code=task2_code)
        report = rep.to_dict()
        if not rep.ok:
            first = rep.violations[0]
            raise KitError(f"{len(rep.violations)} rule violation(s) ({', '.join(rep.broken)}), first: "
                           f"{first}; see `python -m submission check --track {t.name} --runs {runs} "
                           f"--data-dir {data_dir}`")
    out = Path(out).expanduser()
    if out.suffix != ".zip":
        raise KitError(f"--out must end in .zip, got {out}")
    zip_sha = write_submission_zip(pred, out)
    summary = {"track": t.name, "column": ps.column, "rows": ps.rows, "zip": str(out), "zip_sha256": zip_sha,
               "prediction": str(pred), "prediction_sha256": file_sha256(pred),
               "score_min": ps.min, "score_max": ps.max, "score_mean": ps.mean}
    bundle = write_bundle(out.with_name(out.stem + "_repro.zip"), t.name, runs, paths.root, summary, report)
    summary["repro_bundle"] = bundle
    return summary

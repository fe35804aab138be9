"""`submission pack`: the Codabench zip (prediction.csv at its root, nothing else) and the
reproducibility bundle for the final round (<out stem>_repro.zip)."""
from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mmctr import contract as C
from mmctr import rundir as L
from mmctr.errors import KitError
from mmctr.io import check_writable, environment, file_sha256
from mmctr.paths import DataPaths, refuse_data_write
from mmctr.tracks import get_track
from . import pipeline as P
from .prediction import canonical_csv, parse_prediction, summarize, test_rows

REPO_ROOT = Path(__file__).resolve().parent.parent
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same files give the same zip bytes
MAX_CODE_FILE = 5 << 20  # code files above this size are left out of the bundle (and listed)
WALK_EXCLUDE = {".git", ".venv", "venv", "data", "runs", "out", "cache", "__pycache__", "build",
                "dist", ".pytest_cache", ".mypy_cache", ".ipynb_checkpoints", "node_modules"}
ENV_FILES = ("requirements.lock", "environment.yml")  # the allowlist beside code/ (+ run/ files)
# Names that may hold credentials: never packed, even when tracked (matched on each path part).
SECRET_NAMES = (".env", ".env.*", "*.env", "*token*", "*secret*", "*.pem", "*.key", "*.p12", "*.pfx",
                "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*credential*", ".netrc", ".pypirc",
                ".git-credentials", "*.kdbx", ".htpasswd", "*password*", "*apikey*", "*api_key*")


def _zip_write(zf: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o755 if executable else 0o644) << 16
    zf.writestr(info, data)


def _git(*args, cwd=REPO_ROOT) -> str | None:
    try:
        res = subprocess.run(["git", *args], capture_output=True, cwd=cwd, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.decode("utf-8", "replace") if res.returncode == 0 else None


def _secret(name: str) -> bool:
    parts = [p.lower().replace("tokeniz", "") for p in Path(name).parts]  # tokenizer.py is code
    return any(fnmatch.fnmatch(part, pat) for part in parts for pat in SECRET_NAMES)


def code_files(root: Path = REPO_ROOT, scanned=()) -> tuple:
    """(files to pack, {left-out file: why}): git's tracked files plus `scanned` (untracked files
    the rule check followed and scanned), never a symlink (its target could be anything), never
    a secret-like name, nothing over MAX_CODE_FILE; every other untracked, not ignored file is
    named as left out. Outside a git checkout: a walk without venv/data/runs/caches."""
    root = Path(root)
    listed = _git("ls-files", "-z", "--cached", cwd=root)
    untracked = _git("ls-files", "-z", "--others", "--exclude-standard", cwd=root)
    left_out = {n: "not tracked by git and not imported by tracked code: commit it to ship it"
                for n in (untracked or "").split("\0") if n and n not in set(scanned)}
    if listed is not None:
        names = sorted({n for n in listed.split("\0") if n} | set(scanned))
    else:
        names = []
        for dirpath, dirnames, filenames in os.walk(root):  # os.walk does not follow dir links
            dirnames[:] = sorted(d for d in dirnames if d not in WALK_EXCLUDE and not d.endswith(".egg-info"))
            rel = Path(dirpath).relative_to(root)
            names += [str(rel / f) for f in sorted(filenames) if not f.endswith((".pyc", ".tmp"))]
        left_out = {}
    kept = []
    for n in names:
        p = root / n
        if any((root / Path(*Path(n).parts[:i])).is_symlink() for i in range(1, len(Path(n).parts) + 1)):
            left_out[n] = "a symlink: not followed"
        elif _secret(n):
            left_out[n] = "a secret-like name"
        elif not p.is_file():
            continue  # tracked but deleted in the work tree
        elif p.stat().st_size > MAX_CODE_FILE:
            left_out[n] = f"over {MAX_CODE_FILE >> 20} MiB"
        else:
            kept.append(n)
    return kept, left_out


class Relative:
    """Rewrites the packing machine's absolute paths (data root, runs dir, repo, home...) into
    tokens such as $DATA/..., so nothing of the participant's file system goes into the bundle."""

    def __init__(self, roots: dict):
        pairs = {}
        for path, token in roots.items():
            if path is None:
                continue
            for variant in {str(Path(path).expanduser()), os.path.abspath(Path(path).expanduser()),
                            str(Path(path).expanduser().resolve())}:
                if variant not in ("/", ""):
                    pairs.setdefault(variant, token)
        self.pairs = sorted(pairs.items(), key=lambda kv: -len(kv[0]))  # longest first

    def text(self, s: str) -> str:
        for path, token in self.pairs:
            s = s.replace(path, token)
        return s

    def doc(self, obj):
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.text(str(k)): self.doc(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.doc(v) for v in obj]
        return obj


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


def _run_sh(track, configs: dict) -> str:
    t = get_track(track)
    target = P.make_target(t.name)
    overrides = [f'{var}="$HERE/{path}"' for var, path in configs.items()]
    cmds = "\n".join("  " + P.render_shell(s, "$PY") + " && \\" for s in P.steps(t.name))
    return f"""#!/usr/bin/env bash
# Re-run track {t.name} end to end, as packed. Usage: DATA=/path/to/data ./run.sh [--no-make]
# DATA is the folder holding {C.CTR_DIR}/; RUNS (default: runs/ beside this file) gets the outputs;
# PY (with --no-make) is the Python to run, default `python`.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
: "${{DATA:?set DATA=/path/to/data (the folder holding {C.CTR_DIR}/)}}"
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


def _environment_line() -> str:
    """Which Docker image variant (or, outside the image, which torch build) made this run."""
    variant = os.environ.get("MMCTR_IMAGE_VARIANT")
    if variant:
        env = os.environ.get
        return (f"- Docker image variant `{variant}` (torch {env('MMCTR_TORCH', '?')}, CUDA "
                f"{env('MMCTR_TORCH_CUDA', '?')}, NVIDIA driver >= {env('MMCTR_MIN_DRIVER', '?')}, lock "
                f"`{env('MMCTR_LOCK', '?')}`): rebuild it with `make docker-build VARIANT={variant}`")
    import torch

    return (f"- packed outside the Docker image: torch {torch.__version__} (CUDA {torch.version.cuda}); "
            "ship the image variant whose torch matches (docs/docker.md)")


def _reproduce_md(track, test_sha, git, configs, summary, t1, t2, left_out, allowed=None) -> str:
    t = get_track(track)
    target = P.make_target(t.name)
    lines = [f"# Reproduce the {t.column} submission (track {t.name})", "",
             f"Packed {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} from git commit "
             f"`{git['commit'] or 'unknown'}`" + (" with uncommitted changes (the code/ folder holds them)"
                                                  if git["dirty"] else "") + ".", "",
             "## Exact commands", "",
             "From this folder, with the organisers' data (the folder holding "
             f"`{C.CTR_DIR}/`):", "", "```bash", "DATA=/path/to/data ./run.sh", "```", "",
             "or let the kit re-run it and compare the new prediction with the packed one:", "", "```bash",
             "python -m submission reproduce THIS_BUNDLE.zip --data-dir /path/to/data", "```", "",
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
                  f"- CTR model: `{(t2.get(L.CONFIG) or {}).get('model')}`"]
    if t1:
        models = ", ".join(f"{m.get('name')} ({m.get('source')})" for m in t1.get(L.MODELS) or []
                           if isinstance(m, dict)) or "none"
        lines.append(f"- Task-1 pretrained weights: {models}")
    lines.append(_environment_line())
    lines += ["", "## Contents", "",
              "- `code/`: the kit's code as packed (git-tracked files only; no symlinks, no secret-like names)",
              "- `run/`: the run manifests, the exact configs (`run/configs/`), the rule-check report, "
              "the packed `prediction.csv`, "
              "`pip-freeze.txt` of the packing environment",
              "- `requirements.lock`, `environment.yml`: the pinned environment "
              "(`pip install -r requirements.lock && pip install --no-deps -e code/`)",
              "- `run.sh`: the commands above"]
    if allowed:
        lines += ["", "## Inputs the kit could not verify (named with `--allow-input`, for the organisers to judge)",
                  ""]
        lines += [f"- `{a['read_as']}` sha256 `{a['sha256']}`" + (f": {a['how']}" if a.get("how") else
                                                                  ": (how it was made: not said)") for a in allowed]
    if left_out:
        lines += ["", "Left out of code/ (see `run/left_out.json`): "
                  + ", ".join(f"`{n}` ({why})" for n, why in sorted(left_out.items()))]
    return "\n".join(lines) + "\n"


def write_bundle(out: Path, track, runs: Path, data_root: Path, summary: dict, report: dict,
                 rel: Relative, canonical: bytes) -> dict:
    """Write the reproducibility bundle to `out` (a staging path); return what went in."""
    t = get_track(track)
    run = L.TrackDir.of(runs)
    t1 = L.read_manifest(run.task1_manifest) if run.task1_manifest.is_file() else None
    t2 = L.read_manifest(run.task2_manifest) if run.task2_manifest.is_file() else None
    head = L.git_commit()
    status = _git("status", "--porcelain", "--untracked-files=no")
    git = {"commit": head, "dirty": bool(status and status.strip())}
    names = []
    configs = {}  # make variable -> path in the bundle
    test_sha = file_sha256(DataPaths.resolve(data_root).table(C.TEST))
    kept, left_out = code_files(scanned=report.get("untracked") or ())
    with zipfile.ZipFile(out, "w") as zf:
        def add(name, data, executable=False):
            _zip_write(zf, name, data, executable)
            names.append(name)

        def add_json(name, doc):
            add(name, (json.dumps(rel.doc(doc), indent=2) + "\n").encode())

        for n in kept:
            p = REPO_ROOT / n
            add(f"code/{n}", p.read_bytes(), executable=os.access(p, os.X_OK))
        for n in ENV_FILES:
            if n in kept:
                add(n, (REPO_ROOT / n).read_bytes())
        for doc, rel_name in ((t1, f"run/{L.TASK1_DIR}/{L.TASK1_MANIFEST}"),
                              (t2, f"run/{L.TASK2_DIR}/{L.MANIFEST}")):
            if doc is not None:
                add_json(rel_name, doc)
        if t1 is not None and isinstance(t1.get(L.CONFIG), dict):
            configs["T1_CONFIG"] = "run/configs/task1.yaml"
            add(configs["T1_CONFIG"], _yaml(rel.doc({k: v for k, v in t1[L.CONFIG].items()
                                                     if k != L.CONFIG_SOURCE})))
        if t2 is not None and isinstance(t2.get(L.CONFIG), dict):
            var = P.t2_config_var(t)
            configs[var] = "run/configs/task2.yaml"
            runtime = t2.get(L.RUNTIME) if isinstance(t2.get(L.RUNTIME), dict) else {}
            full = {**t2[L.CONFIG], **runtime}  # task2 keeps speed/budget keys apart
            add(configs[var], _yaml(rel.doc({k: v for k, v in full.items() if k != L.CONFIG_SOURCE})))
        add(f"run/{C.SUBMISSION_FILE}", canonical)  # what submission.zip holds (for `submission reproduce`)
        add_json("run/check_report.json", report)
        add_json("run/left_out.json", left_out)
        freeze = _pip_freeze()
        if freeze:
            add("run/pip-freeze.txt", rel.text(freeze.decode("utf-8", "replace")).encode())
        add_json("run/environment.json", {"packed_with": environment(), "git": git, "argv": sys.argv})
        add_json("run/submission.json", summary)
        add("run.sh", _run_sh(t, configs).encode(), executable=True)
        add("REPRODUCE.md", rel.text(_reproduce_md(t, test_sha, git, configs, summary, t1, t2,
                                                   left_out, report.get("allowed_inputs"))).encode())
    return {"files": len(names), "left_out": left_out, "git": git}


def _stage(final: Path) -> Path:
    """A fresh temp file beside `final` (same file system, so the rename is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    return Path(tmp)


def replace_together(pairs) -> None:
    """Move each staged file onto its final name, all or none: the finals that existed are kept
    as hard links (or copies) until every rename succeeded, and put back if one fails. Only a
    kill between two renames (microseconds) can leave a mixed pair; the zip goes last."""
    backups, done = {}, []
    try:
        for _, final in pairs:
            if final.exists():
                bak = _stage(final)
                bak.unlink()
                try:
                    os.link(final, bak)
                except OSError:
                    shutil.copy2(final, bak)
                backups[final] = bak
        for tmp, final in pairs:
            os.replace(tmp, final)
            done.append(final)
    except BaseException:
        for final in done:
            if final in backups:
                os.replace(backups.pop(final), final)
            else:
                final.unlink(missing_ok=True)
        raise
    finally:
        for bak in backups.values():
            bak.unlink(missing_ok=True)


def pack(track, runs, data_dir, out, prediction=None, code_dirs=None, task2_code=None, allow_inputs=None) -> dict:
    """Check the rules, then write submission.zip and its repro bundle, together or not at all.

    Ships only the run's own prediction (RUNS/task2/prediction.csv as task2 predict wrote it,
    sha256 in the run manifest), read once, parsed strictly and rewritten canonically. A
    `prediction` path is accepted only when its bytes are that same prediction.
    """
    from .rules import check

    t = get_track(track)
    paths = DataPaths.resolve(data_dir)
    runs = Path(runs).expanduser()
    if not runs.is_dir():
        raise KitError(f"runs directory not found: {runs} (run `make task1 task2` first)")
    out = Path(out).expanduser()
    if out.suffix != ".zip":
        raise KitError(f"--out must end in .zip, got {out}")
    bundle = out.with_name(out.stem + "_repro.zip")
    refuse_data_write(out, paths.root, "--out")
    refuse_data_write(bundle, paths.root, "the repro bundle")
    check_writable(out, "--out")
    check_writable(bundle, "the repro bundle")
    run = L.TrackDir.of(runs)
    src = Path(prediction).expanduser() if prediction else run.prediction
    if not src.is_file():
        raise KitError(f"{C.SUBMISSION_FILE} not found: {src}")
    raw = src.read_bytes()  # read once: these bytes are what is checked, hashed and shipped
    raw_sha = hashlib.sha256(raw).hexdigest()
    _, n = test_rows(paths.root)
    scores = parse_prediction(raw, n, t, str(src))
    rep = check(t, runs, paths.root, code_dirs=code_dirs, task2_code=task2_code, allow_inputs=allow_inputs)
    if not rep.ok:
        first = rep.violations[0]
        raise KitError(f"{len(rep.violations)} rule violation(s) ({', '.join(rep.broken)}), first: "
                       f"{first}; see `python -m submission check --track {t.name} --runs {runs} "
                       f"--data-dir {data_dir}`")
    recorded = (L.read_manifest(run.task2_manifest).get(L.PREDICTION) or {}).get(L.SHA256)
    if raw_sha != recorded:
        raise KitError(f"{src} is not the prediction the checked run made (sha256 {raw_sha[:12]}, the run "
                       f"manifest records {str(recorded)[:12]}): pack ships only {run.prediction} as "
                       "`task2 predict` wrote it")
    canonical = canonical_csv(scores, t)
    ps = summarize(src, scores, t)
    rel = Relative({str(runs): "$RUNS", str(paths.root): "$DATA", str(out.parent): "$OUT",
                    str(REPO_ROOT): "$CODE", str(Path.home()): "~",
                    **{str(d): f"$SCAN{i}" for i, d in enumerate([*(code_dirs or ()), *(task2_code or ())])}})
    tmp_zip, tmp_bundle = _stage(out), _stage(bundle)
    try:
        with zipfile.ZipFile(tmp_zip, "w") as zf:
            _zip_write(zf, C.SUBMISSION_FILE, canonical)
        with zipfile.ZipFile(tmp_zip) as zf:  # re-read before it replaces anything
            if zf.namelist() != [C.SUBMISSION_FILE] or zf.read(C.SUBMISSION_FILE) != canonical:
                raise KitError(f"{out}: the written zip does not re-read cleanly")
        summary = {"track": t.name, "column": ps.column, "rows": ps.rows, "zip": str(out),
                   "zip_sha256": file_sha256(tmp_zip), "prediction": str(src), "prediction_sha256": raw_sha,
                   "canonical_sha256": hashlib.sha256(canonical).hexdigest(),
                   "score_min": ps.min, "score_max": ps.max, "score_mean": ps.mean}
        info = write_bundle(tmp_bundle, t, runs, paths.root, summary, rep.to_dict(), rel, canonical)
        for tmp in (tmp_zip, tmp_bundle):
            os.chmod(tmp, 0o644)
        replace_together([(tmp_bundle, bundle), (tmp_zip, out)])
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise KitError(f"cannot write {out} and {bundle.name}: {why.lower()}"
                       + (f" ({exc.filename})" if exc.filename else "")) from None
    finally:
        tmp_zip.unlink(missing_ok=True)
        tmp_bundle.unlink(missing_ok=True)
    summary["repro_bundle"] = {"path": str(bundle), "sha256": file_sha256(bundle), **info}
    return summary

"""`submission reproduce BUNDLE --data-dir DATA`: what organisers do by hand, automated.

Unpacks a repro bundle into a temp dir, runs its run.sh (`--no-make`, with this Python, the
given data, outputs in the temp dir) and compares the new prediction with the one the bundle
ships (run/prediction.csv, the canonical bytes of submission.zip).

Agreement: max |new - shipped| <= tol (default REPRODUCE_TOL = 1e-3: CPU float summation
order and thread counts move probabilities by ~1e-6..1e-4; bf16 autocast on CUDA by more, pass
a larger --tol when the original run used a GPU). Also reported: the Spearman correlation, and
the AUC of the new scores against "shipped score above its median" (1.0 = same ranking).

It runs the bundle's own code (that is the point): do it where you would run the participant's
code. Entries that would land outside the temp dir, and symlink entries, are refused.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.metrics import roc_auc
from mmctr.paths import DataPaths

from mmctr import rundir as L
from .prediction import parse_prediction, test_rows

REPRODUCE_TOL = 1e-3
MAX_BUNDLE_BYTES = 8 << 30  # uncompressed total a bundle may unpack to (code + run files, no data)
MAX_BUNDLE_ENTRIES = 100_000
SHIPPED = f"run/{C.SUBMISSION_FILE}"  # inside the bundle


def safe_extract(bundle: Path, dest: Path) -> None:
    """Extract a zip refusing absolute names, `..`, and symlink entries (a bundle is untrusted)."""
    try:
        zf = zipfile.ZipFile(bundle)
    except (OSError, zipfile.BadZipFile) as exc:
        raise KitError(f"{bundle} is not a readable zip ({exc})") from None
    with zf:
        infos = zf.infolist()
        total = sum(info.file_size for info in infos)
        if len(infos) > MAX_BUNDLE_ENTRIES or total > MAX_BUNDLE_BYTES:
            raise KitError(f"{bundle}: {len(infos)} entries, {total} bytes unpacked: more than a bundle "
                           f"holds (at most {MAX_BUNDLE_ENTRIES} entries, {MAX_BUNDLE_BYTES} bytes)")
        for info in infos:
            name = PurePosixPath(info.filename)
            if name.is_absolute() or ".." in name.parts or "\\" in info.filename:
                raise KitError(f"{bundle}: entry {info.filename!r} would land outside the folder")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise KitError(f"{bundle}: entry {info.filename!r} is a symlink")
            target = dest / Path(*name.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:  # streamed: the header's file_size caps what ZipExtFile yields
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
                raise KitError(f"{bundle}: entry {info.filename!r} is damaged ({exc})") from None
            if (info.external_attr >> 16) & 0o111:
                target.chmod(0o755)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def compare(shipped: np.ndarray, new: np.ndarray) -> dict:
    """max |diff|, Spearman, and the AUC of `new` against `shipped` above its median."""
    diff = np.abs(new - shipped)
    above = (shipped > np.median(shipped)).astype(np.float64)
    auc = roc_auc(above, new) if 0 < above.sum() < above.size else float("nan")
    return {"rows": int(shipped.size), "max_abs_diff": float(diff.max(initial=0.0)),
            "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
            "spearman": _spearman(shipped, new), "auc_vs_shipped_ranking": auc}


def reproduce(bundle, data_dir, track, tol: float = REPRODUCE_TOL, python: str = sys.executable,
              timeout: float | None = None, keep=None) -> dict:
    """Re-run a bundle and compare; the result dict has "ok" (within tol) and the figures."""
    bundle = Path(bundle).expanduser()
    if not bundle.is_file():
        raise KitError(f"repro bundle not found: {bundle}")
    paths = DataPaths.resolve(data_dir)
    _, n = test_rows(paths.root)
    with tempfile.TemporaryDirectory(prefix="mmctr-reproduce-", dir=keep) as tmp:
        work = Path(tmp)
        safe_extract(bundle, work)
        if not (work / "run.sh").is_file() or not (work / SHIPPED).is_file():
            raise KitError(f"{bundle} lacks run.sh or {SHIPPED}: not a bundle of `submission pack`")
        shipped = parse_prediction((work / SHIPPED).read_bytes(), n, track, f"{bundle}:{SHIPPED}")
        runs = work / "runs"
        env = {**os.environ, "DATA": str(paths.root), "RUNS": str(runs), "PY": python,
               "PYTHONPATH": str(work / "code")}
        try:
            res = subprocess.run(["bash", str(work / "run.sh"), "--no-make"], cwd=work, env=env,
                                 capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise KitError(f"run.sh of {bundle} ran past {timeout} s") from None
        new_path = runs / L.TASK2_DIR / C.SUBMISSION_FILE
        if res.returncode != 0 or not new_path.is_file():
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise KitError(f"run.sh of {bundle} failed (exit {res.returncode}): {tail[0]}")
        new = parse_prediction(new_path.read_bytes(), n, track, "the re-run prediction")
    figures = compare(shipped, new)
    return {"ok": figures["max_abs_diff"] <= tol, "tol": tol, **figures}

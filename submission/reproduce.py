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
from mmctr.ledger import KIT_ROOT, source_sha256
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
            if info.flag_bits & 0x1:
                raise KitError(f"{bundle}: entry {info.filename!r} is encrypted: a bundle is a plain zip")
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


SANDBOXES = ("bwrap", "unshare", "none")


def sandbox_kind(prefer: str | None = None) -> str:
    """The strongest sandbox this machine can start: bwrap (bubblewrap: read-only root, private
    /tmp, no network, own pid namespace), unshare (no network, own pid namespace; the data is a
    copy, the rest of the file system stays writable) or none (a data copy, a scrubbed env and a
    process-group kill only)."""
    tries = [prefer] if prefer else list(SANDBOXES)
    for kind in tries:
        if kind == "none":
            return kind
        probe = (["bwrap", "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"] if kind == "bwrap"
                 else ["unshare", "--net", "--pid", "--fork", "--kill-child", "true"])
        try:
            if shutil.which(probe[0]) and subprocess.run(probe, capture_output=True, timeout=30).returncode == 0:
                return kind
        except (OSError, subprocess.SubprocessError):
            pass
        if prefer:
            raise KitError(f"--sandbox {prefer}: cannot start it here (install bubblewrap: apt-get install -y "
                           "bubblewrap; user namespaces must be allowed)")
    return "none"


INSIDE = "/tmp/repro"  # where the bundle's copy is seen from inside the bwrap sandbox
# The only variables the run inherits (pretrained-weight caches, read-only under bwrap).
PASS_ENV = ("TORCH_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "CUDA_VISIBLE_DEVICES")


def _command(kind: str, work: Path, env: dict, hide=()) -> tuple:
    """(argv, env) of run.sh under sandbox `kind`; under bwrap the files `hide` (the bundle and
    the uploaded zip, wherever they lie) read as empty."""
    if kind == "bwrap":
        inner = {k: v.replace(str(work), INSIDE) for k, v in env.items()}
        data = env["DATA"]
        masks = [a for f in hide if f and Path(f).is_file()
                 for a in ("--ro-bind", "/dev/null", str(Path(f).resolve()))]
        # the private /tmp would hide an interpreter (a venv, a clone) that lives under /tmp
        pythons = dict.fromkeys(str(Path(p).resolve()) for p in (Path(env["PY"]).parent.parent, sys.prefix,
                                                                   sys.base_prefix) if Path(p).is_dir())
        keep = [a for p in pythons if Path(p).is_relative_to("/tmp") for a in ("--ro-bind", p, p)]
        argv = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *masks, "--tmpfs", "/tmp",
                *keep, "--ro-bind", data, data, "--bind", str(work), INSIDE, "--unshare-all", "--die-with-parent",
                "--chdir", INSIDE,
                "bash", f"{INSIDE}/run.sh", "--no-make"]
        return argv, inner
    run = ["bash", str(work / "run.sh"), "--no-make"]
    if kind == "unshare":
        run = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", *run]
    return run, env


def _kill_group(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tree_state(root: Path) -> dict:
    """{relative path: (size, mtime_ns)} of every file under root (to see writes into the data)."""
    out = {}
    for p in sorted(root.rglob("*")):
        try:
            st = p.lstat()
        except OSError:
            continue
        out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns, stat.S_IFMT(st.st_mode))
    return out


def _hide(work: Path, shas: set) -> list:
    """Remove every file under work whose sha256 is one of `shas` (shipped outputs); return them."""
    from mmctr.io import file_sha256

    gone = []
    for p in sorted(work.rglob("*")):
        if p.is_file() and not p.is_symlink() and file_sha256(p) in shas:
            p.unlink()
            gone.append(p.relative_to(work).as_posix())
    return gone


def read_zip_prediction(zip_path, n: int, track) -> np.ndarray:
    """The prediction.csv at the root of a Codabench submission zip, parsed for the track."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            info = zf.getinfo(C.SUBMISSION_FILE)
            if info.flag_bits & 0x1:
                raise KitError(f"{zip_path}: {C.SUBMISSION_FILE} is encrypted: the scorer cannot read it")
            raw = zf.read(info)
    except KeyError:
        raise KitError(f"{zip_path} has no {C.SUBMISSION_FILE} at its root") from None
    except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError) as exc:
        raise KitError(f"{zip_path} is not a readable zip ({exc})") from None
    return parse_prediction(raw, n, track, f"{zip_path}:{C.SUBMISSION_FILE}")


def _trained(work: Path, shipped_dir: Path, started: float) -> dict:
    """Evidence that the re-run trained: a fresh manifest, checkpoint, history and ledgers that
    differ from the shipped ones. {"ok": bool, "why": [reasons it did not], ...}."""
    import json

    from mmctr.io import file_sha256

    from .ledgers import unsound

    why = []
    run2 = work / "runs" / L.TASK2_DIR
    new_path, old_path = run2 / L.MANIFEST, shipped_dir / L.TASK2_DIR / L.MANIFEST
    try:
        new = json.loads(new_path.read_text())
    except (OSError, ValueError) as exc:
        return {"ok": False, "why": [f"the re-run wrote no readable {L.MANIFEST} ({exc})"]}
    try:
        old = json.loads(old_path.read_text())
    except (OSError, ValueError):
        old = {}
    if not isinstance(new, dict):
        return {"ok": False, "why": [f"the re-run's {L.MANIFEST} is not a JSON object"]}
    if new_path.stat().st_mtime < started:
        why.append(f"{L.MANIFEST} is older than the re-run")
    ck = new.get(L.CHECKPOINT) if isinstance(new.get(L.CHECKPOINT), dict) else {}
    best = run2 / str(ck.get(L.PATH) or L.BEST)
    if not best.is_file() or best.stat().st_mtime < started:
        why.append("no checkpoint was written during the re-run")
    elif file_sha256(best) != ck.get(L.SHA256):
        why.append(f"{best.name} is not the checkpoint the re-run's manifest records")
    for key in ("created", L.TIMINGS):
        if old.get(key) is not None and new.get(key) == old.get(key):
            why.append(f"the manifest's {key!r} is the shipped one (copied, not re-run)")
    history = new.get("history") if isinstance(new.get("history"), list) else []
    if not history:
        why.append("the manifest records no epochs")
    for where, led, entry in (("train", new.get(L.LEDGER), "task2 train"),
                              ("predict", (new.get(L.PREDICTION) or {}).get(L.LEDGER)
                               if isinstance(new.get(L.PREDICTION), dict) else None, "task2 predict")):
        bad = unsound(led)
        if bad or led.get("entry") != entry or not led.get("modules"):
            why.append(f"the {where} ledger is missing or not the kit's ({bad or led.get('entry')})")
        elif isinstance(old, dict) and led.get("sha256") == ((old.get(L.LEDGER) or {}) if where == "train" else
                                                             (old.get(L.PREDICTION) or {}).get(L.LEDGER) or {}
                                                             ).get("sha256"):
            why.append(f"the {where} ledger is the shipped one")
    return {"ok": not why, "why": why, "epochs": len(history), "timings": new.get(L.TIMINGS),
            "shipped_timings": old.get(L.TIMINGS) if isinstance(old, dict) else None,
            "checkpoint_sha256": ck.get(L.SHA256)}


# The code that writes the ledger: the bundle's copy must be the kit's, or its ledgers prove nothing.
LEDGER_CODE = ("mmctr/ledger.py", "mmctr/rundir.py")
SHIPPED_RUN = (f"run/{C.SUBMISSION_FILE}", f"run/{L.TASK1_DIR}", f"run/{L.TASK2_DIR}",
               "run/check_report.json")  # not visible to the run


def _unpack(bundle: Path, work: Path, shipped_dir: Path) -> list:
    """Extract the bundle into work and move what it shipped (prediction, run folders, report) to
    shipped_dir, where the re-run cannot see it; any other copy of those files is removed too.
    Returns the paths removed."""
    from mmctr.io import file_sha256

    work.mkdir()
    safe_extract(bundle, work)
    if not (work / "run.sh").is_file() or not (work / SHIPPED).is_file():
        raise KitError(f"{bundle} lacks run.sh or {SHIPPED}: not a bundle of `submission pack`")
    hidden_shas = {file_sha256(work / SHIPPED)}
    for name in SHIPPED_RUN:
        src = work / name
        if src.exists():
            dst = shipped_dir / Path(name).relative_to("run")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_file():
                hidden_shas.add(file_sha256(src))
            shutil.move(str(src), str(dst))
    return _hide(work, hidden_shas)


def _env(tmp: Path, kind: str, data_root: Path, runs: Path, python: str, work: Path) -> dict:
    """The whole environment of run.sh: nothing of the caller's leaks in but PASS_ENV."""
    env = {"PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp / "home"),
           "TMPDIR": "/tmp", "LANG": "C.UTF-8", "DATA": str(data_root), "RUNS": str(runs), "PY": python,
           "PYTHONPATH": str(work / "code"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface"),
           **{k: os.environ[k] for k in PASS_ENV if k in os.environ}}
    if kind == "bwrap":
        env["HOME"] = "/tmp/home"
    else:
        Path(env["HOME"]).mkdir()
    return env


def _run(argv: list, env: dict, work: Path, log: Path, timeout, what: str) -> int:
    """run.sh's exit status; on timeout, or when it returns, every process it started is killed."""
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            raise KitError(f"run.sh of {what} ran past {timeout} s: stopped, with every process it started") from None
        finally:
            _kill_group(proc)  # what run.sh left running in the background


def _written(before: dict, data_root: Path) -> list:
    """Files of the data dir changed, added or removed since `before` (a _tree_state)."""
    after = _tree_state(data_root)
    return sorted(k for k, v in after.items() if before.get(k) != v) + \
        sorted(k for k in before if not (data_root / k).exists() and not (data_root / k).is_symlink())


def _judge(trained: dict, work: Path, runs: Path, data_root: Path, track) -> dict:
    """The organisers' rules on what the sandbox saw (ledgers, provenance, re-scoring), and whether
    the bundle's ledger code is the kit's; {rel: same} of LEDGER_CODE. Updates `trained`."""
    kit_code = {rel: (work / "code" / rel).is_file() and source_sha256(work / "code" / rel) == source_sha256(
        KIT_ROOT / rel) for rel in LEDGER_CODE}
    if trained["ok"]:
        from .rules import check

        rep = check(track, runs, data_root)
        trained["check"] = {"ok": rep.ok, "violations": [str(v) for v in rep.violations]}
        if not all(kit_code.values()):
            trained["why"].append("the bundle's ledger code differs from the kit's: "
                                  + ", ".join(k for k, same in kit_code.items() if not same))
        if not rep.ok:
            trained["why"].append(f"check on the re-run: {rep.violations[0]}")
        trained["ok"] = not trained["why"]
    return kit_code


def reproduce(bundle, data_dir, track, tol: float = REPRODUCE_TOL, python: str = sys.executable,
              timeout: float | None = None, keep=None, zip_path=None, sandbox: str | None = None) -> dict:
    """Re-run a bundle in a sandbox and compare; the result dict has "ok" (within tol of the
    bundle's and of the uploaded zip's prediction, and training really happened) and the figures."""
    import time

    bundle = Path(bundle).expanduser()
    if not bundle.is_file():
        raise KitError(f"repro bundle not found: {bundle}")
    paths = DataPaths.resolve(data_dir)
    _, n = test_rows(paths.root)
    kind = sandbox_kind(sandbox)
    uploaded = read_zip_prediction(zip_path, n, track) if zip_path else None
    with tempfile.TemporaryDirectory(prefix="mmctr-reproduce-", dir=keep) as tmp:
        tmp = Path(tmp)
        work, shipped_dir, runs = tmp / "work", tmp / "shipped", tmp / "work" / "runs"
        hidden = _unpack(bundle, work, shipped_dir)
        shipped = parse_prediction((shipped_dir / C.SUBMISSION_FILE).read_bytes(), n, track, f"{bundle}:{SHIPPED}")
        if kind == "bwrap":
            data_root = paths.root  # the whole root is mounted read-only
        else:  # a copy: what the run writes into it is seen afterwards and never reaches the real data
            data_root = tmp / "data"
            shutil.copytree(paths.root, data_root, symlinks=False)
        before = _tree_state(data_root)
        argv, env = _command(kind, work, _env(tmp, kind, data_root, runs, python, work), hide=(bundle, zip_path))
        started = time.time() - 1
        rc = _run(argv, env, work, tmp / "run.log", timeout, f"{bundle} (sandbox {kind})")
        wrote = _written(before, data_root)
        new_path = runs / L.TASK2_DIR / C.SUBMISSION_FILE
        if rc != 0 or not new_path.is_file():
            lines = [ln for ln in (tmp / "run.log").read_text(errors="replace").splitlines() if ln.strip()]
            tail = lines[-1] if lines else "(no output)"
            raise KitError(f"run.sh of {bundle} failed (exit {rc}, sandbox {kind}): {tail}"
                           + (f"; it wrote into the data dir: {', '.join(wrote[:3])}" if wrote else ""))
        new = parse_prediction(new_path.read_bytes(), n, track, "the re-run prediction")
        trained = _trained(work, shipped_dir, started)
        kit_code = _judge(trained, work, runs, data_root, track)
    figures = compare(shipped, new)
    res = {"tol": tol, **figures, "sandbox": kind, "hidden": hidden, "data_written": wrote, "trained": trained,
           "ledger_code_is_kit": kit_code}
    if uploaded is not None:
        up = compare(uploaded, new)
        res["vs_zip"] = {"max_abs_diff": up["max_abs_diff"], "spearman": up["spearman"],
                         "zip_is_bundle": bool(np.array_equal(uploaded, shipped))}
    res["ok"] = (figures["max_abs_diff"] <= tol and not wrote and trained["ok"]
                 and (uploaded is None or (res["vs_zip"]["max_abs_diff"] <= tol and res["vs_zip"]["zip_is_bundle"])))
    return res

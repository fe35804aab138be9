"""The rules read from the run-time ledgers (mmctr.ledger) that every manifest carries.

A ledger says what a kit command's process loaded and spawned, whatever the source text says:
`no-trees`, `no-pretrained-ctr` and `no-ensemble` look here first, the source scan (scan.py)
stays a lint for honest mistakes. A manifest without a sound ledger breaks `manifest`.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path, PurePath

from mmctr import ledger as LG
from mmctr import rundir as M

from .scan import PRETRAINED_MODULES, TREE_MODULES, _matches

# torch imports torch.hub itself: loaded by every torch program, it proves nothing; what it would
# fetch shows as network events or opened weight files.
HUB_MODULES = tuple(m for m in PRETRAINED_MODULES if m != "torch.hub")
RUN_CHECKPOINTS = (M.BEST, M.LAST)  # what task2 train writes and predict reads
_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
LEDGER_KEYS = ("modules", "watched", "files_run", "processes", "weights_opened", "network")


def file_modules(path: str) -> set:
    """The dotted names a source file could be a module of: /x/sklearn/ensemble/_gb.py ->
    sklearn.ensemble._gb, ensemble._gb, _gb (matched against dotted prefixes)."""
    parts = [p for p in PurePath(path).with_suffix("").parts if p not in ("/", "__init__")]
    return {".".join(parts[i:]) for i in range(len(parts))}


def _closure_cache() -> Path | None:
    """Where this interpreter's sklearn.metrics closure is kept: the user's cache folder, one file
    per interpreter and sklearn install (path, version, mtime), so an upgrade is a new file."""
    try:
        spec = importlib.util.find_spec("sklearn")
        if spec is None or not spec.origin:
            return None
        pkg = Path(spec.origin).parent
        key = json.dumps([os.path.realpath(sys.executable), sys.version, str(pkg),
                          importlib.metadata.version("scikit-learn"),
                          *(os.stat(pkg / f).st_mtime_ns for f in ("__init__.py", "metrics/__init__.py"))])
    except (ImportError, ValueError, OSError, importlib.metadata.PackageNotFoundError):
        return None
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(home) / "mmctr" / f"sklearn_metrics_{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _read_closure(path: Path | None) -> frozenset | None:
    try:
        names = json.loads(path.read_text())
    except (AttributeError, OSError, ValueError):
        return None
    ok = isinstance(names, list) and "sklearn.metrics" in names and \
        all(isinstance(n, str) and n.split(".")[0] == "sklearn" for n in names)
    return frozenset(names) if ok else None


@functools.lru_cache(maxsize=1)
def sklearn_metrics_closure() -> frozenset:
    """The exact sklearn modules `import sklearn.metrics` loads here (what the kit itself uses):
    computed in a fresh interpreter once per sklearn install, then read from the user's cache."""
    cache = _closure_cache()
    cached = _read_closure(cache)
    if cached is not None:
        return cached
    code = ("import json, sys, sklearn.metrics; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('sklearn'))))")
    try:
        out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120)
        names = frozenset(json.loads(out.stdout))
    except (OSError, subprocess.SubprocessError, ValueError):
        return frozenset()
    if cache is not None and "sklearn.metrics" in names:
        try:  # written whole then renamed: a reader never sees half a file
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(sorted(names)))
            os.replace(tmp, cache)
        except OSError:
            pass
    return names


def _ledgers(ctx, t1, t2) -> list:
    """[(where, ledger or None, task)] of every manifest entry that must carry one."""
    out = []
    if t1 is not None:
        out.append((ctx.rel(ctx.run.task1_manifest), t1.get(LG.LEDGER), "task1"))
    if t2 is not None:
        where = ctx.rel(ctx.run.task2_manifest)
        out.append((where, t2.get(LG.LEDGER), "task2"))
        pred = t2.get(M.PREDICTION)
        if isinstance(pred, dict):
            out.append((f"{where}:{M.PREDICTION}", pred.get(LG.LEDGER), "task2 predict"))
    return out


def unsound(led) -> str | None:
    """Why `led` is not a ledger mmctr.ledger wrote, or None."""
    if not isinstance(led, dict):
        return "records no ledger of what ran (written by hand or by an older kit): re-run the command"
    if any(not isinstance(led.get(k), list) for k in LEDGER_KEYS) or not isinstance(led.get("sources"), dict):
        return f"the ledger lacks one of {', '.join(LEDGER_KEYS)}, sources"
    if led.get("sha256") != LG.digest(led):
        return "the ledger was edited after the run wrote it (its sha256 does not match its body)"
    return None


def vouches(led) -> bool:
    """A sound ledger that a kit command's entry started and that loaded no tree library."""
    return not unsound(led) and bool(led.get("entry")) and \
        not any(_matches(str(n), TREE_MODULES) for n in [*led["modules"], *led["watched"]])


def check_ledgers(ctx, t1, t2) -> None:
    r = ctx.report
    allowed_sklearn = None
    for where, led, task in _ledgers(ctx, t1, t2):
        key = f"{where}:{LG.LEDGER}"
        why = unsound(led)
        if why:
            r.add("manifest", key, why)
            continue
        loaded = set(map(str, led["modules"])) | set(map(str, led["watched"]))
        loaded |= {n for f in map(str, led["files_run"]) for n in file_modules(f)
                   if _matches(n, TREE_MODULES + HUB_MODULES)}
        for name in sorted(loaded):
            if _matches(name, TREE_MODULES):
                r.add("no-trees", f"{key}.modules", f"the run loaded {name}: no tree or boosting library")
            elif task.startswith("task2") and _matches(name, HUB_MODULES):
                r.add("no-pretrained-ctr", f"{key}.modules", f"the CTR run loaded {name}, a pretrained-model "
                      "hub: pretrained models may only extract item features in Task 1")
        for name in map(str, led.get("attempted") or ()):
            if _matches(name, TREE_MODULES):
                r.warn("no-trees", f"{key}.attempted", f"the run tried to import {name} (it did not load)")
        for proc in led["processes"]:
            argv = [str(a) for a in (proc.get("argv") or [])] if isinstance(proc, dict) else [str(proc)]
            words = set(_WORDS.findall(" ".join(argv)))
            hits = sorted({m for w in words for m in [_matches(w, TREE_MODULES)] if m})
            shown = " ".join(argv)[:120]
            if hits:
                r.add("no-trees", f"{key}.processes", f"the run spawned `{shown}`, whose command line names "
                      f"{', '.join(hits)}: no tree or boosting library, in any process")
            elif argv and PurePath(argv[0]).name.startswith("python") and "fuxictr_runner.py" not in shown:
                r.warn("no-trees", f"{key}.processes", f"the run spawned another Python, `{shown}`: its "
                       "imports are not in this ledger")
        if task.startswith("task2"):
            if led["network"]:
                r.add("no-pretrained-ctr", f"{key}.network", f"the CTR run used the network "
                      f"({led.get('n_network', len(led['network']))} events, e.g. {led['network'][0]}): "
                      "nothing may be fetched into the CTR model")
            foreign = [p for p in map(str, led["weights_opened"]) if PurePath(p).name not in RUN_CHECKPOINTS]
            if foreign:  # a ledger no kit command started also holds what its caller did before
                (r.add if led.get("entry") else r.warn)(
                    "no-pretrained-ctr", f"{key}.weights_opened", f"the CTR run opened weight files "
                    f"{', '.join(foreign[:3])}: only its own {' / '.join(RUN_CHECKPOINTS)}")
            sk = sorted(n for n in loaded if n.split(".")[0] == "sklearn")
            if sk:
                allowed_sklearn = sklearn_metrics_closure() if allowed_sklearn is None else allowed_sklearn
                extra = [n for n in sk if n not in allowed_sklearn]
                if extra and allowed_sklearn:
                    r.warn("single-model", f"{key}.watched", f"the CTR run loaded {', '.join(extra[:5])}, beyond "
                           "what sklearn.metrics needs: a second model library?")
        if task == "task2 predict":
            ckpts = sorted(set(map(str, led["weights_opened"])))
            if len(ckpts) > 1:
                r.add("no-ensemble", f"{key}.weights_opened", f"predict opened {len(ckpts)} checkpoints "
                      f"({', '.join(PurePath(p).name for p in ckpts[:4])}): one model predicts")

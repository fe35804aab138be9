"""Code Python runs at interpreter start-up, out of the source scan's sight: a sitecustomize or
usercustomize module, or a .pth file with an `import` line, in a folder on sys.path (or a site
folder). One is vouched for only when an installed distribution's RECORD lists it with its sha256
and the kit's lock files pin that distribution; `submission check` warns about every other one.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.machinery
import importlib.metadata
import re
import site
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
HOOK_MODULES = ("sitecustomize", "usercustomize")
LOCK_FILES = ("requirements.lock", "requirements-dev.lock", "requirements-cu12.lock")
KIT_DIST = "mmctr-kit"
VOUCH = ("check cannot vouch for code run at interpreter start-up; the organisers' `submission reproduce` "
         "in a clean image does")
_PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==", re.M)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def search_dirs() -> list[Path]:
    """The folders on sys.path and the site folders (even when not on sys.path)."""
    raw = list(sys.path)
    try:
        raw += site.getsitepackages() + [site.getusersitepackages()]
    except AttributeError:  # an embedded or virtualenv-patched site module without them
        pass
    return [Path(p or ".") for p in raw]


def _runs_imports(pth: Path) -> bool:
    """True when site.py would exec a line of this .pth file."""
    try:
        text = pth.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError:
        return True  # unreadable to us is not proof that nothing runs
    return any(line.startswith(("import ", "import\t")) for line in text.splitlines())


def hook_files(dirs) -> list[Path]:
    """Start-up hooks in `dirs`, as found there (not resolved), sorted, each once."""
    found = set()
    for d in dirs:
        d = Path(d)
        if d.is_file():
            found.update(_zipped_hooks(d))
        if not d.is_dir():
            continue
        for name in HOOK_MODULES:
            for s in importlib.machinery.all_suffixes():
                found.update(p for p in (d / (name + s), d / name / ("__init__" + s)) if p.is_file())
        found.update(p for p in d.glob("*.pth") if p.is_file() and _runs_imports(p))
    return sorted(found)


def _zipped_hooks(archive: Path) -> list[Path]:
    """sitecustomize / usercustomize inside a zip on sys.path (zipimport runs them too)."""
    try:
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return []
    return [archive / n for n in names if n.split("/")[0].split(".")[0] in HOOK_MODULES
            and n.endswith(tuple(importlib.machinery.all_suffixes()))]


def pinned_names(root: Path = REPO_ROOT) -> set:
    """Distribution names the kit's lock files pin (normalised), and the kit itself."""
    names = {KIT_DIST}
    for lock in LOCK_FILES:
        try:
            names.update(_norm(m) for m in _PINNED.findall((root / lock).read_text()))
        except OSError:
            continue
    return names


def _record_sha(path: Path) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()


def unvouched(dirs=None) -> list[tuple[str, str]]:
    """(path, why) of each start-up hook in `dirs` (default: `search_dirs()`) not vouched for."""
    dirs = search_dirs() if dirs is None else [Path(d) for d in dirs]
    found = hook_files(dirs)
    hooks: dict = {}  # resolved path -> the folder it was found in
    for p in found:
        hooks.setdefault(p.resolve(), p.parent)
    if not hooks:
        return []
    wanted = {p.name for p in hooks}
    owners: dict = {}  # path -> (distribution, RECORD hash matches); a hook's RECORD is in its own folder
    for dist in importlib.metadata.distributions(path=sorted({str(p.parent) for p in found})):
        record = dist.read_text("RECORD")
        if record is not None and not any(name in record for name in wanted):
            continue  # its RECORD names none of the hooks: parsing its (maybe long) file list would find nothing
        for f in dist.files or ():
            if f.name not in wanted:
                continue
            p = Path(dist.locate_file(f)).resolve()
            if p in hooks and not owners.get(p, ("", False))[1]:
                ok = f.hash is not None and f.hash.mode == "sha256" and f.hash.value == _record_sha(p)
                owners[p] = (dist.metadata["Name"] or "?", ok)
    pinned = pinned_names()
    stdlib = {Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib")}
    out = []
    for p, where in sorted(hooks.items()):
        dist, ok = owners.get(p, (None, False))
        if dist is None:
            why = "in no installed distribution's RECORD"
            if where.resolve() in stdlib:
                why += "; beside the interpreter's standard library, usually its OS package's"
        elif not ok:
            why = f"RECORD of {dist} lists it with another sha256"
        elif _norm(dist) not in pinned:
            why = f"of distribution {dist}, which the kit's lock files do not pin"
        else:
            continue
        out.append((str(p), why))
    return out

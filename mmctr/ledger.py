"""The run-time ledger: what a kit command really imported, spawned, compiled and fetched.

Recorded from inside the process with an audit hook (PEP 578), so that the rules read what ran
rather than what the source text says: an `import` reached through `importlib`, `pydoc.locate`,
`pickle`, `exec` or a file git does not track is still an `import` event. `install()` is called
at the entry of every kit command that trains, predicts or builds; `snapshot()` is what every
manifest carries under "ledger":

    {"version", "python", "argv", "entry", "modules": [top-level names loaded], "watched": [full
     names loaded under WATCHED], "attempted": [imports tried that did not load], "files_run":
     [source files executed outside the import system: runpy, exec_module, the main script],
     "sources": {repo-relative path: sha256} of the kit's own modules loaded, "processes":
     [{"event", "argv"}], "n_processes", "weights_opened": [weight files opened (since a mark)],
     "network": [samples], "n_network", "dynamic_code": {"compile", "exec", "samples"}, "sha256": of
     the canonical JSON of everything else}

Standard library only: task1/fuxictr_runner.py loads this file by path under FuxiCTR's own
interpreter and reports its ledger back. A hook cannot be removed once added (that is the point
of PEP 578), so the hook is cheap: events it does not record return at the first test.
"""
from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading
from pathlib import Path

VERSION = 1
LEDGER = "ledger"  # manifest key
# Packages whose submodules are recorded by full name (the rules ban some of their submodules,
# e.g. sklearn.ensemble, and allow others, e.g. sklearn.metrics).
WATCHED = ("sklearn", "timm", "interpret", "cuml")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".onnx", ".h5", ".pkl", ".joblib")
MAX_PROCESSES, MAX_ARG_CHARS, MAX_ARGS = 200, 2000, 64
MAX_SAMPLES = 5
KIT_PACKAGES = ("mmctr", "task1", "task2", "submission")  # their loaded sources are hashed ("sources")
KIT_ROOT = Path(__file__).resolve().parents[1]

_lock = threading.Lock()
_state: dict | None = None
_hooked = False  # one hook per process, whatever happens to _state


def _top(name) -> str:
    return str(name).split(".", 1)[0]


def _add_module(name) -> None:
    """An import event (loaded or not: the event comes first). Names seen in sys.modules at a
    later event are confirmed loaded, so a module deleted from sys.modules afterwards still counts."""
    st, modules = _state, sys.modules
    pending = st["pending"]
    for prev in [n for n in pending if n in modules]:
        pending.discard(prev)
        st["confirmed"].add(prev)
    st["imported"].add(str(name))
    pending.add(str(name))


def _argv(args) -> list:
    if isinstance(args, (str, bytes)):
        args = [args]
    try:
        return [str(a)[:MAX_ARG_CHARS] for a in list(args)[:MAX_ARGS]]
    except TypeError:
        return [str(args)[:MAX_ARG_CHARS]]


def _process(event: str, argv) -> None:
    _state["n_processes"] += 1
    if len(_state["processes"]) < MAX_PROCESSES:
        _state["processes"].append({"event": event, "argv": _argv(argv)})


def _on_open(st, args) -> None:
    path = args[0]
    if isinstance(path, str) and path.endswith(WEIGHT_SUFFIXES):
        opened = st["weights_opened"]  # path -> sequence number of its latest open
        if path in opened or len(opened) < MAX_PROCESSES:
            st["n_opens"] += 1
            opened[path] = st["n_opens"]


def _on_compile(st, args) -> None:
    filename = str(args[1]) if len(args) > 1 else ""
    if filename.startswith("<"):  # not a module's source file: code made at run time
        st["dynamic_code"]["compile"] += 1
        src = args[0]
        if isinstance(src, (str, bytes)) and len(st["dynamic_code"]["samples"]) < MAX_SAMPLES:
            text = src.decode("latin-1") if isinstance(src, bytes) else src
            st["dynamic_code"]["samples"].append(f"{filename}: {text[:200]}")


def _on_exec(st, args) -> None:
    st["dynamic_code"]["exec"] += 1
    filename = getattr(args[0], "co_filename", "")
    if isinstance(filename, str) and not filename.startswith("<"):
        st["files_run"].add(filename)


def _on_network(event: str):
    def record(st, args) -> None:
        where = args[1] if event == "socket.connect" else args[0]
        host = where[0] if isinstance(where, tuple) and where else where
        if event != "urllib.Request" and (not isinstance(host, (str, bytes)) or _local(host)):
            return  # a unix socket or this machine (torch.distributed's rendezvous): not the network
        st["n_network"] += 1
        if len(st["network"]) < MAX_SAMPLES:
            st["network"].append(f"{event} {str(where)[:200]}")
    return record


# event -> what it records; every other event (most of them: builtins.id, object.__getattr__,
# marshal.loads, ...) costs the hook one dict lookup
_HANDLERS = {
    "import": lambda st, args: _add_module(args[0]),
    "pickle.find_class": lambda st, args: _add_module(args[0]),
    "open": _on_open,
    "compile": _on_compile,
    "exec": _on_exec,
    "subprocess.Popen": lambda st, args: _process("subprocess.Popen", args[1] if args[1] is not None else [args[0]]),
    "os.system": lambda st, args: _process("os.system", [args[0]]),
    "os.exec": lambda st, args: _process("os.exec", args[1]),
    "os.posix_spawn": lambda st, args: _process("os.posix_spawn", args[1]),
    "os.spawn": lambda st, args: _process("os.spawn", args[-2]),
    "os.fork": lambda st, args: _process("os.fork", []),
    **{e: _on_network(e) for e in ("urllib.Request", "socket.connect", "socket.getaddrinfo")},
}


def _hook(event: str, args) -> None:
    handler = _HANDLERS.get(event)
    if handler is not None and _state is not None:
        handler(_state, args)


def _local(host) -> bool:
    host = host.decode("latin-1") if isinstance(host, bytes) else str(host)
    return host in ("", "localhost", "::1", "0.0.0.0", "::", socket.gethostname()) or host.startswith(("127.", "/"))


def install(entry: str | None = None) -> None:
    """Start recording (idempotent). Modules already loaded are taken from sys.modules."""
    global _state, _hooked
    with _lock:
        if _state is not None:
            if entry and not _state["entry"]:
                _state["entry"] = entry
            return
        _state = {"entry": entry, "imported": set(sys.modules), "pending": set(), "confirmed": set(),
                  "files_run": set(), "processes": [], "n_processes": 0,
                  "weights_opened": {}, "n_opens": 0, "network": [], "n_network": 0,
                  "dynamic_code": {"compile": 0, "exec": 0, "samples": []}}
        if not _hooked:
            sys.addaudithook(_hook)
            _hooked = True


def installed() -> bool:
    return _state is not None


def seal(body: dict) -> dict:
    """`body` plus "sha256" of its canonical JSON (the ledger's own fingerprint)."""
    body = {k: v for k, v in body.items() if k != "sha256"}
    return {**body, "sha256": digest(body)}


def source_sha256(path) -> str:
    """sha256 of a source file with CRLF line ends read as LF (a Windows checkout is the same code)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read().replace(b"\r\n", b"\n")).hexdigest()


def kit_sources(modules) -> dict:
    """{repo-relative path: source_sha256} of the kit's own modules among `modules`."""
    out = {}
    for name, mod in modules:
        path = getattr(mod, "__file__", None)
        if _top(name) not in KIT_PACKAGES or not isinstance(path, str) or not path.endswith(".py"):
            continue
        try:
            rel = Path(path).resolve().relative_to(KIT_ROOT).as_posix()
            out[rel] = source_sha256(path)
        except (OSError, ValueError):
            continue
    return dict(sorted(out.items()))


def digest(body: dict) -> str:
    body = {k: v for k, v in body.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def mark() -> int:
    """A point in the run: snapshot(since=mark()) lists only the weight files opened after it
    (what `task2 predict` loaded when it runs in the process that trained)."""
    install()
    return _state["n_opens"]


def snapshot(since: int = 0) -> dict:
    """The ledger so far, as plain JSON (installs the hook first if no entry point did)."""
    install()
    with _lock:
        st = _state
        loaded = set(sys.modules)  # also what was loaded without an import event (e.g. by C code)
        confirmed = set(st["confirmed"]) | {n for n in set(st["pending"]) if n in loaded}
        present = loaded | confirmed
        names = set(st["imported"]) | loaded
        tops = {_top(n) for n in present}
        modules = {_top(n) for n in names if _top(n) in tops}
        attempted = sorted(n for n in set(st["imported"]) - present if _top(n) not in tops)
        mods = list(sys.modules.items())
        module_files = {getattr(m, "__file__", None) for _, m in mods}
        files_run = sorted(f for f in set(st["files_run"]) if f not in module_files)[:MAX_PROCESSES]
        body = {"version": VERSION, "python": sys.version.split()[0], "argv": _argv(sys.argv),
                "entry": st["entry"], "modules": sorted(modules),
                "watched": sorted(n for n in names if _top(n) in WATCHED and _top(n) in tops),
                "attempted": attempted, "files_run": files_run, "sources": kit_sources(mods),
                "processes": [dict(p) for p in st["processes"]], "n_processes": st["n_processes"],
                "weights_opened": [p for p, n in dict(st["weights_opened"]).items() if n > since],
                "network": list(st["network"]),
                "n_network": st["n_network"],
                "dynamic_code": {**st["dynamic_code"], "samples": list(st["dynamic_code"]["samples"])}}
    return seal(body)

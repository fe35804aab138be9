"""Atomic writes, file hashes and run manifests."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask is racy)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    The file ends up with the mode a plain open() would give (0666 & ~umask, so 0644 under
    the usual umask), not mkstemp's 0600: a container running as another uid can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp collapses `link/..` lexically; the kernel (and os.replace) follows the link: resolve
    # the folder so the temp file is made where the file will land (same dir, same filesystem).
    path = path.parent.resolve() / path.name
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(path, table) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def file_sha256(path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def environment() -> dict:
    """Versions that decide whether a run can be reproduced."""
    info = {"python": sys.version.split()[0], "platform": platform.platform()}
    for mod in ("numpy", "pyarrow", "torch"):
        with contextlib.suppress(ImportError):
            info[mod] = __import__(mod).__version__
    with contextlib.suppress(ImportError):
        import torch

        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


class Timer:
    """Collects named timings: `with timer("encode"): ...`; wall clock by default,
    `Timer(time.process_time)` for CPU seconds (user + system, every thread of this process)."""

    def __init__(self, clock=time.perf_counter):
        self.seconds: dict = {}
        self.clock = clock

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = self.clock()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + self.clock() - t0, 3)


def check_writable(path, what: str = "output") -> Path:
    """Fail before any work when `path` (a file or folder to be written) cannot be written."""
    p = Path(path).expanduser()
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir() and probe != p:
        from .errors import KitError

        raise KitError(f"{what} {p}: {probe} is a file, not a folder")
    folder = probe if probe.is_dir() else probe.parent
    if not os.access(folder, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        from .errors import KitError

        raise KitError(f"{what} {p} is not writable (no write permission on {folder if not p.exists() else p})")
    return p


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup memory limit;
    None where neither can be read (non-Linux)."""
    avail = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    if avail is None:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        with contextlib.suppress(OSError, ValueError):
            limit = int(Path(limit_file).read_text().strip())  # "max" (no limit) -> ValueError
            left = max(limit - int(Path(usage_file).read_text().strip()), 0)
            if limit < 1 << 60:  # cgroup v1 writes a huge number for "no limit"
                avail = left if avail is None else min(avail, left)
            break
    return avail


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_alloc(n_bytes, what: str) -> None:
    """Refuse, before allocating, `n_bytes` for `what` when this machine has not that much
    memory available (KitError naming what, the size and what is free). Call it with the
    size computed from user settings (table rows x dim x itemsize, batch x width...)."""
    from .errors import KitError

    n_bytes = int(n_bytes)
    if n_bytes < 0:
        raise KitError(f"{what}: negative size {n_bytes} bytes (a setting is negative?)")
    avail = available_memory()
    if avail is not None and n_bytes > avail:
        raise KitError(f"{what} needs {_human(n_bytes)} but only {_human(avail)} of memory is "
                       "available: lower the setting that sizes it or use a larger machine")


def _parquet_call(fn, path, what, **kw):
    import pyarrow as pa

    from .errors import KitError

    p = Path(path)
    name = f"{what} " if what else ""
    if not p.is_file():
        raise KitError(f"{name}file not found: {p}")
    try:
        return fn(p, **kw)
    except (pa.ArrowException, OSError, ValueError) as exc:
        size = p.stat().st_size
        why = "empty file (0 bytes)" if size == 0 else str(exc).splitlines()[0]
        raise KitError(f"{name}{p} is not a readable parquet file: {why}") from None


def read_parquet(path, columns=None, what: str = ""):
    """pyarrow.parquet.read_table with one KitError naming the file when it is not parquet."""
    import pyarrow.parquet as pq

    return _parquet_call(pq.read_table, path, what, columns=columns)


def read_parquet_schema(path, what: str = ""):
    """The parquet schema, or one KitError naming the file."""
    import pyarrow.parquet as pq

    return _parquet_call(pq.read_schema, path, what)


def read_parquet_metadata(path, what: str = ""):
    """The parquet footer metadata (num_rows...), or one KitError naming the file."""
    import pyarrow.parquet as pq

    return _parquet_call(pq.read_metadata, path, what)

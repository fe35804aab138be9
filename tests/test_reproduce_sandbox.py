"""`submission reproduce` runs a bundle in a sandbox and asks for evidence that it trained.

Hand-made bundles (no training: fast) whose run.sh cheats or misbehaves: copies the shipped
prediction, writes into the data or outside its folder, leaves processes behind, reads the
caller's environment. The sandbox kinds this machine cannot start are skipped, by name.
"""
from __future__ import annotations

import base64
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mmctr import contract as C
from mmctr.errors import KitError
from submission.prediction import canonical_csv
from submission.reproduce import read_zip_prediction, reproduce, sandbox_kind

def _available(kind: str) -> bool:
    try:
        return sandbox_kind(kind) == kind
    except KitError:
        return False


def kinds():
    return [pytest.param(k, marks=pytest.mark.skipif(not _available(k), reason=f"{k} cannot start here "
                                                     "(bubblewrap: apt-get install -y bubblewrap)"))
            for k in ("bwrap", "unshare", "none")]


def scores(n: int) -> np.ndarray:
    return np.round(np.random.default_rng(0).random(n), 6)


def bundle(tmp_path: Path, tiny_data: Path, run_sh: str, files: dict | None = None) -> Path:
    """A bundle as `submission pack` lays it out: run.sh, run/prediction.csv, run/task2/manifest.json."""
    import pyarrow.parquet as pq

    n = pq.read_metadata(tiny_data / C.TEST.relpath).num_rows
    pred = canonical_csv(scores(n), "task2")
    manifest = {"kind": "task2", "created": "2025-01-01T00:00:00+00:00", "timings": {"train": 1.0},
                "history": [{"epoch": 1}]}
    z = tmp_path / "b_repro.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("run.sh", "#!/usr/bin/env bash\nHERE=\"$(cd \"$(dirname \"$0\")\" && pwd)\"\n" + run_sh)
        zf.writestr("run/prediction.csv", pred)
        zf.writestr("run/task2/manifest.json", json.dumps(manifest))
        zf.writestr("run/submission.json", json.dumps({"track": "task2"}))
        for name, data in (files or {}).items():
            zf.writestr(name, data)
    return z


def encoded_prediction(tiny_data: Path) -> dict:
    """The shipped prediction hidden in the code as base64 (not byte-identical, so not hidden)."""
    import pyarrow.parquet as pq

    n = pq.read_metadata(tiny_data / C.TEST.relpath).num_rows
    return {"code/blob.b64": base64.b64encode(canonical_csv(scores(n), "task2"))}


WRITE_PREDICTION = 'mkdir -p "$RUNS/task2" && base64 -d "$HERE/code/blob.b64" > "$RUNS/task2/prediction.csv"\n'


@pytest.mark.parametrize("kind", kinds())
def test_a_run_sh_that_copies_the_shipped_prediction_fails(tmp_path, tiny_data, kind):
    b = bundle(tmp_path, tiny_data, 'set -e\nmkdir -p "$RUNS/task2"\n'
               'cp "$HERE/run/prediction.csv" "$RUNS/task2/" '
               '|| cp "$HERE/code/copy.csv" "$RUNS/task2/prediction.csv"\n',
               files={"code/copy.csv": zipfile.ZipFile(bundle(tmp_path, tiny_data, "")).read("run/prediction.csv")})
    with pytest.raises(KitError, match="failed"):
        reproduce(b, tiny_data, "task2", timeout=60, sandbox=kind)


@pytest.mark.parametrize("kind", kinds())
def test_a_prediction_without_training_is_not_a_reproduction(tmp_path, tiny_data, kind):
    """run.sh rebuilds the shipped prediction from a copy in another encoding: the figures agree,
    but no checkpoint, manifest or ledger was made by the re-run."""
    b = bundle(tmp_path, tiny_data, WRITE_PREDICTION, files=encoded_prediction(tiny_data))
    res = reproduce(b, tiny_data, "task2", timeout=60, sandbox=kind)
    assert res["max_abs_diff"] == 0 and not res["ok"] and not res["trained"]["ok"], res
    assert "no readable manifest.json" in res["trained"]["why"][0]


@pytest.mark.parametrize("kind", kinds())
def test_writes_into_the_data_or_outside_never_land(tmp_path, tiny_data, kind):
    outside = tmp_path / "outside" / "pwned.txt"
    outside.parent.mkdir()
    b = bundle(tmp_path, tiny_data, f'echo x > "$DATA/PWNED.txt"\necho x > {outside}\n' + WRITE_PREDICTION,
               files=encoded_prediction(tiny_data))
    res = reproduce(b, tiny_data, "task2", timeout=60, sandbox=kind)
    assert not (tiny_data / "PWNED.txt").exists() and not res["ok"]
    if kind == "bwrap":  # read-only file system: neither write happened
        assert not outside.exists() and res["data_written"] == []
    else:  # the data is a copy: the write is seen and named, the real data untouched
        assert res["data_written"] == ["PWNED.txt"]


def _alive(marker: str) -> list:
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and marker in (p / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                out.append(p.name)
        except OSError:
            continue
    return out


def marker(kind: str, base: int) -> str:
    """A sleep length no other test (another kind, another worker or checkout) sleeps: base.<kind><pid>."""
    return f"{base}.{('bwrap', 'unshare', 'none').index(kind) + 1}{os.getpid() % 100000:05d}"


@pytest.mark.parametrize("kind", kinds())
def test_timeout_kills_every_process_the_run_started(tmp_path, tiny_data, kind):
    m = marker(kind, 41)
    b = bundle(tmp_path, tiny_data, f"sleep {m}1 &\nsleep {m}2\n")
    with pytest.raises(KitError, match="ran past 3"):
        reproduce(b, tiny_data, "task2", timeout=3, sandbox=kind)
    assert not _alive(m), "a process of run.sh survived the timeout"


@pytest.mark.parametrize("kind", kinds())
def test_processes_left_in_the_background_are_stopped(tmp_path, tiny_data, kind):
    m = marker(kind, 42)
    b = bundle(tmp_path, tiny_data, f"sleep {m}1 &\nexit 3\n")
    with pytest.raises(KitError, match="exit 3"):
        reproduce(b, tiny_data, "task2", timeout=30, sandbox=kind)
    assert not _alive(m)


@pytest.mark.parametrize("kind", kinds())
def test_the_environment_is_scrubbed(tmp_path, tiny_data, kind, monkeypatch):
    monkeypatch.setenv("MY_SECRET_TOKEN", "hunter2")
    b = bundle(tmp_path, tiny_data, 'echo "ENV:$(env | grep -c MY_SECRET_TOKEN)"\nexit 1\n')
    with pytest.raises(KitError, match="ENV:0"):
        reproduce(b, tiny_data, "task2", timeout=30, sandbox=kind)


@pytest.mark.parametrize("kind", kinds()[:2])
def test_no_network(tmp_path, tiny_data, kind):
    probe = ("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n    print('NET:open')\n"
             "except OSError:\n    print('NET:none')\n")
    b = bundle(tmp_path, tiny_data, f'"$PY" -c "{probe}"\nexit 1\n')
    with pytest.raises(KitError, match="NET:none"):
        reproduce(b, tiny_data, "task2", timeout=30, sandbox=kind)


def test_the_uploaded_zip_must_be_the_bundles_prediction(tmp_path, tiny_data):
    b = bundle(tmp_path, tiny_data, WRITE_PREDICTION, files=encoded_prediction(tiny_data))
    z = tmp_path / "submission.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(C.SUBMISSION_FILE, zipfile.ZipFile(b).read("run/prediction.csv").replace(b"0.", b"0.9", 5))
    res = reproduce(b, tiny_data, "task2", timeout=60, zip_path=z)
    assert res["vs_zip"]["zip_is_bundle"] is False and not res["ok"]


def test_an_encrypted_zip_entry_is_one_line(tmp_path, tiny_data):
    z = tmp_path / "submission.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(C.SUBMISSION_FILE, b"ID,Task2\n")
    raw = bytearray(z.read_bytes())
    # set the "encrypted" flag bit in the local header and the central directory entry
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        i = raw.find(sig)
        off = i + (6 if sig == b"PK\x03\x04" else 8)
        raw[off] |= 0x1
    z.write_bytes(bytes(raw))
    with pytest.raises(KitError, match="encrypted"):
        read_zip_prediction(z, 900, "task2")


@pytest.mark.parametrize("kind", kinds())
def test_the_bundle_itself_is_not_readable_from_the_run(tiny_data, kind):
    """run.sh that unzips the shipped prediction from the bundle file wherever it lies: under bwrap
    the file reads as empty; elsewhere the copy shows as no training."""
    import shutil
    import tempfile

    where = Path(tempfile.mkdtemp(dir="/var/tmp" if Path("/var/tmp").is_dir() else None))
    try:
        path = where / "b_repro.zip"
        grab = (f'"$PY" -c "import zipfile, os; d = os.environ[\'RUNS\'] + \'/task2\'; os.makedirs(d); '
                f'open(d + \'/prediction.csv\', \'wb\')'
                f'.write(zipfile.ZipFile(\'{path}\').read(\'run/prediction.csv\'))"\n')
        shutil.move(str(bundle(where, tiny_data, grab)), str(path))
        if kind == "bwrap":
            with pytest.raises(KitError, match="failed"):
                reproduce(path, tiny_data, "task2", timeout=60, sandbox=kind)
        else:
            assert not reproduce(path, tiny_data, "task2", timeout=60, sandbox=kind)["ok"]
    finally:
        shutil.rmtree(where, ignore_errors=True)

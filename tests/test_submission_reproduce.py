"""`submission reproduce`: re-run a packed bundle and compare its prediction with the shipped one.

One real tiny run (TINY sample, a small DIN, 1 epoch on the CPU): train, predict, pack, then
reproduce the bundle in a temp dir; a bundle whose shipped prediction was altered must fail.
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmctr.errors import KitError
from submission import reproduce as R
from submission.cli import entry
from submission.reproduce import REPRODUCE_TOL, compare, reproduce, safe_extract

SMALL = {"model": "din", "embedding_dim": 8, "dnn_hidden_units": [16], "attention_hidden_units": [16],
         "batch_size": 1024, "max_epochs": 1, "device": "cpu", "amp": False, "num_threads": 1}


@pytest.fixture(scope="module")
def packed(tmp_path_factory, tiny_data):
    from submission.pack import pack

    root = tmp_path_factory.mktemp("repro")
    cfg_path = root / "small.yaml"
    cfg_path.write_text(yaml.safe_dump(SMALL))
    runs = root / "runs" / "task2"
    kit("train", "--data-dir", tiny_data, "--config", cfg_path, "--out", runs / "task2", "--device", "cpu")
    kit("predict", "--run", runs / "task2", "--data-dir", tiny_data, "--track", "task2")
    out = root / "submission.zip"
    pack("task2", runs, tiny_data, out)
    return root / "submission_repro.zip"


def kit(*args) -> None:
    """`python -m task2 ...` in its own process, as a user runs it: its ledger is its own."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "task2", *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]


def _rewrite(bundle: Path, to: Path, name: str, fn) -> Path:
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(to, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, fn(data) if info.filename == name else data)
    return to


def test_reproduce_agrees_with_the_shipped_prediction(packed, tiny_data, monkeypatch, capsys):
    res = reproduce(packed, tiny_data, "task2", timeout=500, zip_path=packed.parent / "submission.zip")
    assert res["ok"] and res["max_abs_diff"] <= REPRODUCE_TOL, res
    assert res["spearman"] > 0.999 and res["auc_vs_shipped_ranking"] > 0.999
    assert res["vs_zip"]["zip_is_bundle"] and res["vs_zip"]["max_abs_diff"] <= REPRODUCE_TOL
    assert res["trained"]["ok"] and res["trained"]["epochs"] == 1 and res["data_written"] == [], res


def test_reproduce_fails_on_an_altered_prediction(packed, tiny_data, tmp_path, monkeypatch, capsys):
    def shift(data: bytes) -> bytes:
        lines = data.decode().split("\n")
        out = [lines[0]] + [f"{line.split(',')[0]},{min(1.0, float(line.split(',')[1]) + 0.01):.8f}"
                            for line in lines[1:] if line]
        return ("\n".join(out) + "\n").encode()

    bad = _rewrite(packed, tmp_path / "bad_repro.zip", "run/prediction.csv", shift)
    monkeypatch.setattr(sys, "argv", ["submission", "reproduce", str(bad), "--data-dir", str(tiny_data),
                                      "--timeout", "500"])
    with pytest.raises(SystemExit) as exc:
        entry()
    out = capsys.readouterr().out
    assert exc.value.code == 1 and out.startswith("FAIL: ") and "max |diff| 0.01" in out, out


def test_a_run_that_trains_then_ships_another_prediction_fails(packed, tiny_data, tmp_path):
    """run.sh trains and predicts for real, then overwrites the prediction with a copy of the
    (altered) shipped one: the figures agree, the organisers' check on the re-run does not."""
    import base64

    def shift(data: bytes) -> bytes:
        lines = data.decode().split("\n")
        out = [lines[0]] + [f"{line.split(',')[0]},{min(1.0, float(line.split(',')[1]) + 0.01):.8f}"
                            for line in lines[1:] if line]
        return ("\n".join(out) + "\n").encode()

    shipped = shift(zipfile.ZipFile(packed).read("run/prediction.csv"))
    blob = base64.b64encode(shipped)
    bad = _rewrite(packed, tmp_path / "swap_repro.zip", "run/prediction.csv", lambda _: shipped)
    bad = _rewrite(bad, tmp_path / "swap2_repro.zip", "run.sh", lambda d: d + (
        f'echo {blob.decode()} | base64 -d > "$RUNS/task2/prediction.csv"\n').encode())
    res = reproduce(bad, tiny_data, "task2", timeout=500)
    assert res["max_abs_diff"] < 1e-6 and not res["ok"], res
    assert any("provenance" in w for w in res["trained"]["why"]), res["trained"]


def test_compare_figures():
    s = np.linspace(0, 1, 101)
    assert compare(s, s)["max_abs_diff"] == 0 and compare(s, s)["auc_vs_shipped_ranking"] == 1.0
    flipped = compare(s, 1 - s)
    assert flipped["spearman"] < -0.999 and flipped["auc_vs_shipped_ranking"] == 0.0


@pytest.mark.parametrize("name", ["../evil.txt", "/abs.txt"])
def test_bundle_entries_cannot_escape(tmp_path, name):
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(name, "x")
    with pytest.raises(KitError, match="outside the folder"):
        safe_extract(z, tmp_path / "x")


def test_bundle_symlink_entry_refused(tmp_path):
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(KitError, match="symlink"):
        safe_extract(z, tmp_path / "x")


def _bundle(path, method=zipfile.ZIP_DEFLATED, **entries):
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name.replace("__", "/"), data)
    return path


def test_reproduce_refuses_a_zip_bomb_before_unpacking(tmp_path, monkeypatch):
    """A hostile bundle: a few KB that unpack to far more than any bundle holds (was read whole into
    memory: 300 MB of zeros took 690 MB RSS)."""
    bundle = _bundle(tmp_path / "bomb.zip", run__sh="echo\n", big=b"\0" * (4 << 20))
    monkeypatch.setattr(R, "MAX_BUNDLE_BYTES", 1 << 20)
    with pytest.raises(KitError, match="more than a bundle holds"):
        R.safe_extract(bundle, tmp_path / "out")
    assert not (tmp_path / "out" / "big").exists()


def test_reproduce_damaged_entry_is_one_error_line(tmp_path):
    """A bundle with a bad CRC was an `unexpected BadZipFile` with a traceback log."""
    bundle = _bundle(tmp_path / "crc.zip", zipfile.ZIP_STORED, run__sh="echo hello world hello\n")
    raw = bytearray(bundle.read_bytes())
    raw[raw.find(b"hello world")] = ord("j")
    bundle.write_bytes(bytes(raw))
    with pytest.raises(KitError, match="'run.sh' is damaged"):
        R.safe_extract(bundle, tmp_path / "out")


def test_real_task1_track_run_passes_check(tmp_path, tiny_data):
    """No false alarm on what task2 really writes: the fixed DIN (din_baseline, 1 epoch) trained on a
    new item_info, predicted, then checked under the Task-1 track (architecture, re-scoring...)."""
    from mmctr import contract as C
    from mmctr.io import file_sha256
    from mmctr.item_info import read_item_info, write_item_info
    from mmctr.rundir import write_manifest
    from mmctr.paths import DataPaths
    from mmctr import rundir as L
    from submission.rules import check
    from runs_factory import honest_ledger

    paths = DataPaths.resolve(tiny_data)
    runs = L.TrackDir.of(tmp_path / "runs" / "task1")
    tags, emb = read_item_info(paths.table(C.ITEM_INFO))
    new = np.random.default_rng(0).normal(size=emb.shape).astype(np.float32)
    new[0] = 0
    write_item_info(runs.item_info, tags, new)
    write_manifest(runs.task1_manifest, "task1", config={"dim": 128}, models=[], timings={},
                   inputs={C.ITEM_FEATURE.relpath: file_sha256(paths.table(C.ITEM_FEATURE))},
                   outputs={L.TASK1_ITEM_INFO: file_sha256(runs.item_info)}, ledger=honest_ledger("task1 build"))
    kit("train", "--data-dir", tiny_data, "--config", "din_baseline", "--item-info", runs.item_info,
        "--out", runs.runs / "task2", "--device", "cpu", "--max-epochs", "1", "--set", "num_threads=1",
        "--set", "amp=false")
    kit("predict", "--run", runs.runs / "task2", "--data-dir", tiny_data, "--track", "task1")
    report = check("task1", runs.runs, tiny_data)
    assert report.ok, report.lines()
    assert report.rescored["max_abs_diff"] < 1e-6 and report.rescored["rows"] == 900

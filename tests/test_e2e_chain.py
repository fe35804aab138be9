"""End to end, as a user runs it: `task1 build` -> `task2 train` -> `task2 predict` ->
`submission check` -> `submission pack`, each a CLI in its own process, on the files task1 really
wrote (not fabricated manifests). A fresh-clone `make demo` once found a rule that failed the
kit's own honest run (the covers folder task1 records by a stat fingerprint); this is its test.

Tiny sample, cheap parts, a small transformer_dcn, 1 epoch, one torch thread.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmctr import contract as C
from submission.rules import RULES

ROOT = Path(__file__).resolve().parents[1]
TRACK = "task1_2"
COLUMN = "Task1&2"
CHEAP_T1 = ["--config", "provided_features", "--set", "fusion.steps=20", "--set", "fusion.hidden=32",
            "--set", "fusion.content_dim=16", "--set", "tags.dim=8", "--set", "behaviour.dim=8"]
COVERS_T1 = ["--config", "default", "--set", "text.enabled=false", "--set", "image.image_size=32",
             "--set", "image.workers=0", "--set", "tags.dim=8", "--set", "behaviour.dim=8",
             "--set", "fusion.method=pca"]
TINY_T2 = ["--config", "transformer_dcn_small", "--max-epochs", "1", "--set", "max_len=8",
           "--set", "d_model=16", "--set", "embedding_dim=16", "--set", "tag_dim=8", "--set", "mm_dim=16",
           "--set", "dnn_hidden_units=[32]", "--set", "cross_layers=1"]
SCORE = re.compile(r"(0|1)\.[0-9]{8}")
pytestmark = pytest.mark.slow  # trains a model end to end (about a minute of CPU)


def cli(cwd: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("MMCTR_RUNS_ROOT", None)
    p = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode in (0, 1), f"{args[:2]} exit {p.returncode}:\n{p.stderr[-3000:]}"
    return p


def chain(tmp_path: Path, data: Path, t1_args: list) -> tuple[Path, dict]:
    """Build, train, predict, check; (runs dir, the check's JSON report)."""
    runs = tmp_path / "runs"
    for args in (
        ["task1", "build", "--data-dir", data, "--out", runs / "task1", "--cache-dir", tmp_path / "cache",
         "--device", "cpu", "--quiet", "--set", "runtime.num_threads=1", *t1_args],
        ["task2", "train", "--data-dir", data, "--item-info", runs / "task1" / "item_info.parquet",
         "--out", runs / "task2", "--device", "cpu", *TINY_T2],
        ["task2", "predict", "--run", runs / "task2", "--data-dir", data, "--track", TRACK, "--device", "cpu"],
    ):
        p = cli(tmp_path, *args)
        assert p.returncode == 0, f"{args[:2]}:\n{p.stderr[-3000:]}"
    p = cli(tmp_path, "submission", "check", "--track", TRACK, "--runs", runs, "--data-dir", data, "--json")
    report = json.loads(p.stdout)
    assert p.returncode == 0 and report["ok"], json.dumps(report["violations"], indent=1)
    expected = set(RULES) - {"fixed-din", "provided-embeddings"}  # the Task-1&2 track's rules
    assert set(report["checked"]) == expected and not report["broken"] and not report["violations"]
    return runs, report


def task1_inputs(runs: Path) -> dict:
    return json.loads((runs / "task1" / "item_info.manifest.json").read_text())["inputs"]


def test_cheap_build_train_predict_check_pack(tmp_path, tiny_data):
    runs, _ = chain(tmp_path, tiny_data, CHEAP_T1)
    assert not any(str(v).startswith("stat-fingerprint:") for v in task1_inputs(runs).values())
    out = runs / "submission.zip"
    p = cli(tmp_path, "submission", "pack", "--track", TRACK, "--runs", runs, "--data-dir", tiny_data,
            "--out", out)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (runs / "submission_repro.zip").is_file()

    with zipfile.ZipFile(out) as z:
        assert z.namelist() == [C.SUBMISSION_FILE] == ["prediction.csv"]
        raw = z.read("prediction.csv")
    text = raw.decode("utf-8")
    assert not text.startswith("\ufeff") and "\r" not in text and text.endswith("\n")
    lines = text[:-1].split("\n")
    assert lines[0] == f"ID,{COLUMN}"
    n_test = pq.read_metadata(tiny_data / C.TEST.relpath).num_rows
    assert len(lines) - 1 == n_test
    rows = [line.split(",") for line in lines[1:]]
    assert all(len(r) == 2 for r in rows)
    assert [r[0] for r in rows] == [str(i) for i in range(n_test)]
    assert all(SCORE.fullmatch(r[1]) and 0.0 <= float(r[1]) <= 1.0 for r in rows)
    assert len({r[1] for r in rows}) > 1

    ran = list(csv.reader(io.StringIO((runs / "task2" / "prediction.csv").read_text())))
    assert ran[0] == ["ID", COLUMN] and len(ran) == n_test + 1
    assert max(abs(float(a[1]) - float(b[1])) for a, b in zip(ran[1:], rows)) <= 5e-9


def test_build_that_reads_the_covers_folder_passes_check(tmp_path, tiny_data):
    runs, _ = chain(tmp_path, tiny_data, COVERS_T1)
    covers = C.IMAGES_DIR  # relative to the data root: the data may be mounted elsewhere
    assert str(task1_inputs(runs).get(covers, "")).startswith("stat-fingerprint:"), task1_inputs(runs)

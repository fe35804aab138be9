"""mmctr.rundir: the one place that names a run folder's files; the lock of a task2 run folder;
task2 train checks its splits against the data contract."""
import ast
import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT
from mmctr import contract as C
from mmctr import rundir as R
from mmctr.errors import KitError
from task2.config import load_config
from task2.train import train_model

PACKAGES = ("mmctr", "task1", "task2", "submission", "bench", "docker")
RUN_FILE_NAMES = {R.BEST, R.LAST, R.HISTORY, R.LOG_FILE, R.MANIFEST, R.TRAINING_PNG, R.LOCK_FILE,
                  R.TASK1_MANIFEST, R.TASK1_REPORT, R.TASK1_LOG, C.SUBMISSION_FILE, R.TASK1_ITEM_INFO}
# where a name is spelled for something that is not a run folder, and why
ELSEWHERE = {
    ("mmctr/contract.py", C.SUBMISSION_FILE): "the challenge's own name of the submission file",
    ("docker/fetch_weights.py", R.MANIFEST): "the manifest of a weights folder, not of a run",
    ("mmctr/contract.py", R.TASK1_ITEM_INFO): "the organisers' data layout (task1 writes the same name)",
}


def _literals(path):
    """Every string constant of a module, f-string parts included (docstrings are prose: skipped)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def test_no_run_folder_file_name_is_spelled_outside_rundir():
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "mmctr/rundir.py":
                continue
            for line, value in _literals(path):
                for name in RUN_FILE_NAMES:
                    if (value == name or value.endswith("/" + name)) and (rel, name) not in ELSEWHERE:
                        found.append(f"{rel}:{line}: {value!r}")
    assert not found, "spell these through mmctr.rundir:\n" + "\n".join(found)


def test_the_grep_sees_a_name_spelled_in_code(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""best.pt in a docstring is prose."""\nA = "best.pt"\nB = f"{x}/last.pt"\n')
    assert [v for _, v in _literals(f)] == ["best.pt", "/last.pt"]


def test_run_dir_names_and_clear(tmp_path):
    run = R.RunDir(tmp_path / "r")
    assert (run.best.name, run.last.name, run.history.name, run.log.name, run.manifest.name) == \
        ("best.pt", "last.pt", "history.jsonl", "train.log", "manifest.json")
    run.path.mkdir()
    for p in (*run.own_files, run.prediction, run.plot):
        p.write_text("x")
    (run.path / "notes.txt").write_text("mine")
    run.clear()
    assert sorted(p.name for p in run.path.iterdir()) == ["notes.txt"]
    track = R.TrackDir.of(tmp_path)
    assert track.task2_manifest == (tmp_path / "task2" / "manifest.json").resolve()
    assert track.item_info.name == "item_info.parquet" and track.task1_manifest.parent.name == "task1"


def test_checkpoints_round_trip_pinned(tmp_path):
    import torch

    run = R.RunDir(tmp_path)
    entry = run.save_checkpoint(R.BEST, {"w": torch.ones(2)})
    assert entry["path"] == "best.pt"
    assert torch.equal(run.load_checkpoint(R.BEST, entry["sha256"])["w"], torch.ones(2))
    with pytest.raises(KitError, match="differs from the manifest"):
        run.load_checkpoint(R.BEST, "0" * 64)


def test_locate_records_files_relative_to_the_data_or_the_track_folder(tmp_path):
    data, run = tmp_path / "data", tmp_path / "runs" / "task2"
    (data / "MicroLens_1M_x1").mkdir(parents=True)
    run.mkdir(parents=True)
    entry = R.locate(data / "MicroLens_1M_x1" / "train.parquet", data, run)
    assert entry == {"path": "MicroLens_1M_x1/train.parquet", "root": "data"}
    assert R.resolve_located(entry, data, run) == data / "MicroLens_1M_x1" / "train.parquet"
    beside_path = tmp_path / "runs" / "task1" / "item_info.parquet"
    beside = R.locate(beside_path, data, run)
    assert beside == {"path": "../task1/item_info.parquet", "root": "run"}
    elsewhere = (tmp_path / "elsewhere" / "item_info.parquet").resolve()
    outside = R.locate(elsewhere, data, run)  # outside the track folder: absolute, not ../../..
    assert outside == {"path": str(elsewhere), "root": "run"}
    assert R.resolve_located(outside, data, run) == elsewhere
    assert R.portable({beside_path: "a", elsewhere: "b"}, data, run) == {"../task1/item_info.parquet": "a",
                                                                         str(elsewhere): "b"}


LOCKER = """
import sys, time
from mmctr.rundir import RunDir
with RunDir(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_train_into_a_locked_run_folder_names_the_first(tiny_data, tmp_path):
    run = tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(run)], stdout=subprocess.PIPE, text=True,
                              env=env, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = load_config("transformer_dcn_small", {"batch_size": 512, "max_epochs": 1, "num_threads": 1})
        with pytest.raises(KitError, match=rf"in use by another `task2 train` \(pid {holder.pid}\)") as exc:
            train_model(cfg, tiny_data, None, run, quiet=True)
        assert "\n" not in str(exc.value)
        assert not (run / "manifest.json").exists()  # nothing of the first run was touched
    finally:
        holder.kill()
        holder.wait()
    t0 = time.time()
    with R.RunDir(run).lock():  # released with the process that held it
        assert time.time() - t0 < 5


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.drop_columns([C.USER_ID]), r"train\.parquet.*missing column 'user_id'"),
    (lambda t: t.set_column(t.schema.get_field_index(C.ITEM_SEQ), C.ITEM_SEQ,
                            pa.array([None] + t.column(C.ITEM_SEQ).to_pylist()[1:],
                                     type=t.schema.field(C.ITEM_SEQ).type)),
     r"train\.parquet:item_seq row 0: "),
])
def test_train_checks_the_splits_against_the_contract(data_copy, tmp_path, damage, message):
    path = data_copy / C.TRAIN.relpath
    pq.write_table(damage(pq.read_table(path)), path)
    cfg = load_config("transformer_dcn_small", {"batch_size": 512, "max_epochs": 1, "num_threads": 1})
    with pytest.raises(KitError, match=message) as exc:
        train_model(cfg, data_copy, None, tmp_path / "r", quiet=True)
    assert "\n" not in str(exc.value)

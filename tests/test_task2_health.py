"""task2 numerical health and input errors: one line, before any work, nothing saved as best."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.item_info import read_item_info
from task2.config import load_config
from mmctr.rundir import BEST
from task2.train import Trainer, train_model

from conftest import kit_cli

FAST = {"batch_size": 256, "max_epochs": 1, "num_threads": 1}


@pytest.fixture()
def task2_cli(capsys):
    """`task2 ...` in this process (the error paths fail before any work): (exit status, stderr)."""
    from task2.cli import main

    return lambda *args: kit_cli(capsys, main, *args)[::2]


def test_non_finite_loss_stops_with_one_error_and_saves_nothing(tiny_data, tmp_path):
    trainer = Trainer(load_config("din_baseline", FAST), tiny_data, None, tmp_path / "r", quiet=True)
    with torch.no_grad():
        trainer.core.likes.weight.fill_(float("nan"))  # what a diverged step leaves behind
    with pytest.raises(KitError, match=r"non-finite loss at epoch 1, step 1 \(learning_rate 0.001\)"):
        trainer.fit()
    assert not (tmp_path / "r" / BEST).exists() and not (tmp_path / "r" / "manifest.json").exists()


def test_inf_in_item_info_is_refused_before_training(tiny_data, tmp_path):
    tags, emb = read_item_info(tiny_data / C.ITEM_INFO.relpath)
    emb = emb.copy()
    emb[7, 3] = np.inf
    t = pq.read_table(tiny_data / C.ITEM_INFO.relpath)  # written bypassing write_item_info's check
    col = pa.ListArray.from_arrays(pa.array(np.arange(0, emb.size + 1, 128, dtype=np.int32)),
                                   pa.array(emb.ravel(), type=pa.float32()))
    bad = tmp_path / "item_info.parquet"
    pq.write_table(t.set_column(t.column_names.index(C.ITEM_EMB), C.ITEM_EMB, col), bad)
    with pytest.raises(KitError, match=r"row 7 holds NaN or inf"):
        train_model(load_config("din_baseline", FAST), tiny_data, bad, tmp_path / "r", quiet=True)


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_train_parquet_is_one_line(data_copy, tmp_path, damage, task2_cli):
    path = data_copy / C.TRAIN.relpath
    raw = path.read_bytes()
    path.write_bytes(b"" if damage == "empty" else raw[: len(raw) // 2])
    rc, err = task2_cli("train", "--data-dir", data_copy, "--config", "din_baseline", "--out", tmp_path / "r")
    assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "train.parquet" in err and "Traceback" not in err


def test_csv_as_item_info_is_one_line(tiny_data, tmp_path, task2_cli):
    csv = tmp_path / "item_info.csv"
    csv.write_text("item_id,item_tags\n0,1\n")
    rc, err = task2_cli("train", "--data-dir", tiny_data, "--item-info", csv, "--out", tmp_path / "r")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "item_info.csv" in err and "parquet" in err


def test_unwritable_out_is_refused_before_work(tiny_data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(KitError, match="is a file, not a folder"):
        train_model(load_config("din_baseline", FAST), tiny_data, None, blocker / "run", quiet=True)


def test_out_inside_the_data_dir_is_refused(data_copy, task2_cli):
    before = {p: p.read_bytes() for p in (data_copy / C.CTR_DIR).iterdir()}
    rc, err = task2_cli("train", "--data-dir", data_copy, "--config", "din_baseline",
                   "--out", data_copy / C.CTR_DIR / "run")
    assert rc == 2 and "inside the data directory" in err
    assert not (data_copy / C.CTR_DIR / "run").exists()
    assert {p: p.read_bytes() for p in (data_copy / C.CTR_DIR).iterdir()} == before


def test_a_fresh_run_clears_the_old_runs_files(tiny_data, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    for name in ("best.pt", "last.pt", "manifest.json", "prediction.csv", "history.jsonl"):
        (out / name).write_text("old")
    trainer = Trainer(load_config("din_baseline", FAST), tiny_data, None, out, quiet=True)
    with torch.no_grad():
        trainer.core.likes.weight.fill_(float("nan"))
    with pytest.raises(KitError, match="non-finite loss"):
        trainer.fit()
    assert sorted(p.name for p in out.iterdir()) == ["train.log"]

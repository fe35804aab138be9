"""task2: config errors, data path, training with a planted signal, predict, DDP (resume: test_task2_resume)."""
import csv
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.item_info import read_item_info, write_item_info
from task2.config import load_config, parse_overrides
from task2.data import iter_batches, seq_matrix
from task2.models import create_model
from task2.predict import predict_run
from task2.train import train_model

from conftest import ROOT

FAST = {"batch_size": 256, "max_epochs": 2, "num_threads": 1}


def test_config_errors(tmp_path):
    with pytest.raises(KitError, match="unknown key.*'dnn_hiden_units'"):
        load_config("din_baseline", {"dnn_hiden_units": [1]})
    with pytest.raises(KitError, match="unknown model 'xgboost'"):
        load_config("din_baseline", {"model": "xgboost"})
    with pytest.raises(KitError, match="'batch_size' = 0: Input should be greater than or equal to 1"):
        load_config("din_baseline", {"batch_size": 0})
    with pytest.raises(KitError, match="config 'nope' not found"):
        load_config("nope")
    with pytest.raises(KitError, match="'net_regularizer' = 'lots': Input should be a valid number"):
        load_config("din_baseline", {"net_regularizer": "lots"})
    assert load_config("din_baseline", parse_overrides(["embedding_regularizer=1e-5"]))["embedding_regularizer"] == 1e-5
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(KitError, match="not valid YAML"):
        load_config(bad)


def test_seq_matrix_keeps_last_items_left_padded():
    col = pa.chunked_array([pa.array([[1, 2, 3, 4, 5], [7], [0, 0, 8, 9]], type=pa.list_(pa.int64()))])
    m = seq_matrix(col, 3)
    assert m.dtype == np.int32
    assert m.tolist() == [[3, 4, 5], [0, 0, 7], [0, 8, 9]]
    fixed = pa.chunked_array([pa.array([[0, 1, 2], [3, 4, 5]], type=pa.list_(pa.int64()))])
    assert seq_matrix(fixed, 2).tolist() == [[1, 2], [4, 5]]


def test_length_buckets_cover_every_row_once():
    lengths = torch.randint(1, 30, (1000,))
    g = torch.Generator().manual_seed(0)
    batches = list(iter_batches(1000, 64, generator=g, lengths=lengths))
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    spread = np.mean([float(lengths[b].max() - lengths[b].min()) for b in batches])
    assert spread < 10  # similar lengths within a batch (random batches span ~28)


def test_din_is_the_fixed_baseline_architecture(tiny_data):
    cfg = load_config("din_baseline")
    tags, emb = read_item_info(tiny_data / C.ITEM_INFO.relpath)
    model = create_model(cfg, torch.from_numpy(tags), torch.from_numpy(emb))
    linears = [m for m in model.dnn if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [1024, 512, 256, 1]
    assert linears[0].in_features == 2 * (64 + 64 + 128) + 2 * 64
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.dnn)
    att = [m for m in model.attention.score if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in att] == [512, 256, 1]
    assert model.items.mm_proj.weight.shape == (128, 128) and model.items.mm_proj.bias is None
    batch = {"seq": torch.tensor([[0, 0, 3], [1, 2, 3]]), "item": torch.tensor([4, 5]),
             "likes": torch.tensor([1, 10]), "views": torch.tensor([0, 3])}
    model.eval()
    assert model(batch).shape == (2,)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "task2"
    cfg = load_config("transformer_dcn_small", FAST)
    summary = train_model(cfg, tiny_data, None, out, quiet=True)
    return out, summary


def test_training_finds_the_planted_signal(trained, tiny_data):
    out, summary = trained
    assert summary["best_valid_auc"] > 0.6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "task2" and manifest["n_models"] == 1 and manifest["pretrained"] == []
    assert len(manifest["history"]) == 2 and manifest["best_epoch"] in (1, 2)
    assert not any("test.parquet" in p for p in manifest["inputs"])
    assert set(manifest["data_files"]) == {"MicroLens_1M_x1/train.parquet", "MicroLens_1M_x1/valid.parquet",
                                           "MicroLens_1M_x1/item_info.parquet"}
    assert manifest["checkpoint"]["path"] == "best.pt" and manifest["last_checkpoint"]["path"] == "last.pt"
    assert manifest["item_info"] == {"path": "MicroLens_1M_x1/item_info.parquet", "root": "data",
                                     "sha256": manifest["data_files"]["MicroLens_1M_x1/item_info.parquet"]}
    paths = json.dumps({k: v for k, v in manifest.items() if k != "ledger"})  # the ledger: argv, files as opened
    assert str(out) not in paths and str(tiny_data) not in paths
    assert "epoch 1: loss" in (out / "train.log").read_text()
    assert "max_epochs" not in manifest["config"] and manifest["runtime"]["max_epochs"] == 2
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()


def test_predict_writes_the_track_column_in_test_order(trained, tiny_data):
    out, _ = trained
    pred = predict_run(out, tiny_data, "task2")
    rows = list(csv.reader(open(out / C.SUBMISSION_FILE)))
    n_test = pq.read_metadata(tiny_data / C.TEST.relpath).num_rows
    assert rows[0] == ["ID", "Task2"] and len(rows) == n_test + 1
    assert [int(r[0]) for r in rows[1:]] == list(range(n_test))
    probs = np.array([float(r[1]) for r in rows[1:]])
    assert np.all((probs >= 0) & (probs <= 1)) and probs.std() > 0
    assert pred["rows"] == n_test and pred["column"] == "Task2"
    entry = json.loads((out / "manifest.json").read_text())["prediction"]
    assert entry["checkpoints_loaded"] == [{"path": "best.pt", "sha256": json.loads(
        (out / "manifest.json").read_text())["checkpoint"]["sha256"]}] and entry["checkpoints_used"] == 1
    assert entry["path"] == "prediction.csv" and entry["test_path"] == "MicroLens_1M_x1/test.parquet"


def test_item_info_from_another_data_set_is_refused(tiny_data, tmp_path):
    tags, emb = read_item_info(tiny_data / C.ITEM_INFO.relpath)
    small = tmp_path / "item_info.parquet"
    write_item_info(small, tags[:50], emb[:50])
    with pytest.raises(KitError, match=r"item_id row \d+: item id outside 0..49 of item_info"):
        train_model(load_config("din_baseline", FAST), tiny_data, small, tmp_path / "r", quiet=True)


def test_cli_errors_are_one_line(tiny_data, tmp_path):
    r = subprocess.run([sys.executable, "-m", "task2", "train", "--data-dir", str(tiny_data), "--config", "nope",
                        "--out", str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.startswith("error: config 'nope' not found")
    r = subprocess.run([sys.executable, "-m", "task2", "predict", "--run", str(tmp_path / "none"),
                        "--data-dir", str(tiny_data)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "run manifest not found" in r.stderr and "Traceback" not in r.stderr

"""bench/bench_peer_momo.py's pure parts (no peer code, no FuxiCTR): the conversion both engines
read, the kit -> peer parameter names, and the params their code gets."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import ROOT, load_script

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.io import write_parquet
from task2.config import load_config
from task2.data import load_split
from task2.models import create_model

B = load_script(ROOT / "bench" / "bench_peer_momo.py")
SPLIT_SCHEMA = [("user_id", pa.int64()), ("item_seq", pa.list_(pa.int64())), ("item_id", pa.int64()),
                ("likes_level", pa.int64()), ("views_level", pa.int64())]


@pytest.fixture(scope="module")
def converted(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("peer") / "data"
    return out, B.convert(tiny_data, out, n_train=300, n_valid=120, n_test=90, max_len=64)


def test_convert_writes_the_exact_schema(converted):
    out, n = converted
    assert n == {"train": 300, "valid": 120, "test": 90, "test_labels": True}
    for table, rows in ((C.TRAIN, 300), (C.VALID, 120), (C.TEST, 90)):
        t = pq.read_table(out / table.relpath)
        want = SPLIT_SCHEMA + ([("label", pa.float32())] if table is not C.TEST else [])
        assert [(f.name, f.type) for f in t.schema] == want, table.name
        assert t.num_rows == rows
        assert {len(s) for s in t.column(C.ITEM_SEQ).to_pylist()} == {64}  # one width: their loader stacks the lists
    truth = pq.read_table(out / "sample_truth" / "test.parquet")
    assert [(f.name, f.type) for f in truth.schema] == [("label", pa.float32())] and truth.num_rows == 90
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == sorted(
        [t.relpath for t in (C.TRAIN, C.VALID, C.TEST, C.ITEM_INFO)] + ["sample_truth/test.parquet"])


def test_convert_keeps_the_first_rows_as_the_kit_reads_them(tiny_data, converted):
    out, _ = converted
    n_items = pq.read_metadata(tiny_data / C.ITEM_INFO.relpath).num_rows - 1
    for table, rows in ((C.TRAIN, 300), (C.VALID, 120)):
        src = load_split(tiny_data / table.relpath, 64, n_items, need_label=True)
        got = load_split(out / table.relpath, 64, n_items, need_label=True)
        for field in ("seq", "item", "likes", "views", "label"):
            assert torch.equal(getattr(got, field), getattr(src, field)[:rows]), (table.name, field)
    src, got = (pq.read_table(p / C.ITEM_INFO.relpath) for p in (tiny_data, out))
    assert got.equals(src)
    labels = pq.read_table(tiny_data / "sample_truth" / "test.parquet").column(C.LABEL).to_numpy()
    np.testing.assert_array_equal(pq.read_table(out / "sample_truth" / "test.parquet").column(C.LABEL).to_numpy(),
                                  labels[:90])


def test_convert_cuts_long_sequences_to_the_most_recent(tmp_path, tiny_data):
    src = tmp_path / "src"
    for table in (C.TRAIN, C.VALID, C.TEST, C.ITEM_INFO):
        t = pq.read_table(tiny_data / table.relpath)
        if table is not C.ITEM_INFO:
            t = t.slice(0, 3)
        write_parquet(src / table.relpath, t)
    t = pq.read_table(src / C.TRAIN.relpath)
    seqs = [list(range(1, 71)), [5], []]
    cols = {c: t.column(c) for c in t.column_names}
    cols[C.ITEM_SEQ] = pa.array(seqs, type=pa.list_(pa.int64()))
    write_parquet(src / C.TRAIN.relpath, pa.table(cols))
    n = B.convert(src, tmp_path / "out", max_len=8)
    assert n["test_labels"] is False and not (tmp_path / "out" / "sample_truth").exists()
    got = pq.read_table(tmp_path / "out" / C.TRAIN.relpath).column(C.ITEM_SEQ).to_pylist()
    assert got == [list(range(63, 71)), [0] * 7 + [5], [0] * 8]


def test_convert_errors_name_the_file(tmp_path, tiny_data, converted):
    out, _ = converted
    with pytest.raises(KitError, match="not empty"):
        B.convert(tiny_data, out)
    src = tmp_path / "src"
    for table in (C.TRAIN, C.VALID, C.TEST, C.ITEM_INFO):
        write_parquet(src / table.relpath, pq.read_table(tiny_data / table.relpath))
    write_parquet(src / C.VALID.relpath, pq.read_table(tiny_data / C.VALID.relpath).drop([C.LIKES]))
    with pytest.raises(KitError, match=r"valid\.parquet: missing column\(s\) \['likes_level'\]"):
        B.convert(src, tmp_path / "o1")
    write_parquet(src / C.VALID.relpath, pq.read_table(tiny_data / C.VALID.relpath))
    (src / C.TEST.relpath).unlink()
    with pytest.raises(KitError, match=r"test\.parquet: missing"):
        B.convert(src, tmp_path / "o2")


def _momo(**sets):
    tags = torch.randint(1, 12, (31, 5))
    tags[0] = 0
    cfg = load_config("transformer_dcn_momo", {"embedding_dim": 8, "tag_dim": 8, "mm_dim": 16, "ff_dim": 16,
                                               "last_k": 4, "dnn_hidden_units": [16], **sets})
    return cfg, create_model(cfg, tags, torch.randn(31, 128))


@pytest.mark.parametrize("head", [[8, 4], []])
def test_every_kit_momo_parameter_has_one_peer_name(head):
    _, model = _momo(head_hidden_units=head)
    state = B.kit_state_to_peer(model)
    assert len(state) == len(model.state_dict())
    assert state["transformer_encoder.out_linear.weight"].shape == tuple(model.momo.pool.weight.shape)
    assert B.peer_name("momo.encoder.layers.1.self_attn.in_proj_weight") == \
        "transformer_encoder.transformer_encoder.layers.1.self_attn.in_proj_weight"
    last = "mlp.mlp.4.weight" if head else "mlp.mlp.0.weight"
    assert state[last].shape == (1, head[-1] if head else model.head.in_features)
    with pytest.raises(KitError, match="pos.weight"):
        B.peer_name("pos.weight")


def test_peer_params_carry_the_config(tmp_path):
    cfg, _ = _momo(momo_mask="as_run", batch_size=64, learning_rate=1e-3)
    p = B.peer_params(cfg, tmp_path / "data", tmp_path / "work", tmp_path / "peer", epochs=3, n_items=30, n_tags=12)
    assert {k: p[k] for k in ("embedding_dim", "first_k_cols", "dim_feedforward", "dcn_hidden_units",
                              "dcn_cross_layers", "mlp_hidden_units", "batch_size", "learning_rate", "epochs",
                              "transformer_dropout", "net_dropout", "batch_norm", "early_stop_patience")} == {
        "embedding_dim": 8, "first_k_cols": 4, "dim_feedforward": 16, "dcn_hidden_units": [16],
        "dcn_cross_layers": 3, "mlp_hidden_units": [64, 32], "batch_size": 64, "learning_rate": 1e-3, "epochs": 3,
        "transformer_dropout": 0.2, "net_dropout": 0.2, "batch_norm": False, "early_stop_patience": 5}
    assert p["feature_specs"] == [{"name": "item_emb_d128", "embedding_dim": 16, "pretrain_dim": 128}]
    assert [c["name"] for c in p["feature_cols"]] == ["user_id", "item_seq", "likes_level", "views_level", "item_id",
                                                     "item_tags", "item_emb_d128"]
    assert p["train_data"] == str((tmp_path / "data" / C.TRAIN.relpath).resolve())


@pytest.mark.parametrize("sets, key", [({"momo_mask": "corrected"}, "momo_mask"),
                                       ({"momo_mask": "as_run", "tag_dim": 32}, "tag_dim"),
                                       ({"momo_mask": "as_run", "evals_per_epoch": 2}, "evals_per_epoch")])
def test_peer_params_refuse_what_their_code_cannot_run(sets, key, tmp_path):
    cfg, _ = _momo(**sets)
    with pytest.raises(KitError, match=key):
        B.peer_params(cfg, tmp_path, tmp_path, tmp_path, epochs=1, n_items=30, n_tags=12)


def test_peer_path_is_checked(tmp_path, monkeypatch):
    monkeypatch.delenv(B.PEER_ENV, raising=False)
    with pytest.raises(KitError, match=B.PEER_ENV):
        B.peer_path()
    with pytest.raises(KitError, match="Transformer_DCN.py: not found"):
        B.peer_path(tmp_path)


def _row(engine, seed, valid, test):
    return {"engine": engine, "seed": seed, "params": 1000, "epochs": 2, "best_epoch": 2, "valid_auc": valid,
            "test_auc": test, "samples_per_s": 100.0}


def test_render_pools_the_seeds_of_saved_runs(tmp_path):
    argv = ["bench/bench_peer_momo.py", "--data-dir", "x", "--epochs", "3"]
    n = {"train": 10, "valid": 5, "test": 5, "test_labels": True}
    for i, rows in enumerate([[_row("kit", 1, 0.70, 0.60), _row("peer", 1, 0.72, None)],
                              [_row("kit", 2, 0.74, 0.64), _row("peer", 2, 0.76, None)]]):
        (tmp_path / f"{i}.json").write_text(json.dumps({"rows": rows, "converted": n, "argv": argv}))
    lines = B.render([str(tmp_path / "0.json"), str(tmp_path / "1.json")])
    text = "\n".join(lines)
    assert "Rows: train 10 / valid 5 / test 5" in text and "up to 3 epoch(s)" in text
    assert sum(line.startswith("| kit | ") for line in lines) == 3  # two seeds + the pooled row
    assert "| kit | 2 | 0.7200 ± 0.0283 | 0.6200 ± 0.0283 |" in text
    assert "| peer | 2 | 0.7400 ± 0.0283 | - |" in text
    other = {"rows": [], "converted": {**n, "train": 11}, "argv": argv}
    (tmp_path / "2.json").write_text(json.dumps(other))
    with pytest.raises(KitError, match="other rows or widths"):
        B.render([str(tmp_path / "0.json"), str(tmp_path / "2.json")])

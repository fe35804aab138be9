"""mmctr.validate: validate_table on any path, validate's checks of a data set, the validate CLI."""
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmctr import contract as C
from mmctr.validate import validate, validate_table

from conftest import ROOT, patch_jpeg_size, set_column, snapshot, with_list_value


@pytest.fixture()
def data(data_copy):
    return data_copy


def rewrite(path, fn):
    pq.write_table(fn(pq.read_table(path)), path)


# ---------- validate_table (public) ----------

def test_validate_table_public_on_any_path(tiny_data, tmp_path):
    src = tiny_data / C.ITEM_INFO.relpath
    assert validate_table(src, C.ITEM_INFO) == []
    t = pq.read_table(src)
    emb = pc_cast_list(t.column(C.ITEM_EMB), pa.float64())
    pq.write_table(set_column(t, C.ITEM_EMB, emb), tmp_path / "mine.parquet")
    problems = validate_table(tmp_path / "mine.parquet", C.ITEM_INFO, label="run/item_info.parquet")
    assert [str(p) for p in problems] == [
        "run/item_info.parquet:item_emb_d128: values are float64, expected exactly float32 "
        "(the contract's list<float> of float32: cast before writing)"]
    assert validate_table(tmp_path / "nope.parquet", C.ITEM_INFO)[0].message == "file missing"
    (tmp_path / "junk.parquet").write_text("a,b\n1,2\n")
    assert "cannot be read as parquet" in str(validate_table(tmp_path / "junk.parquet", C.ITEM_INFO)[0])


def pc_cast_list(col, value_type):
    return col.cast(pa.list_(value_type))


# ---------- validate: the gaps ----------

def msgs(data, **kw):
    return [str(p) for p in validate(data, **kw)]


@pytest.mark.parametrize("decode", [False, True])
def test_validate_checks_covers(data, decode):
    d = data / C.IMAGES_DIR
    (d / "3.jpg").write_bytes(b"")
    (d / "4.jpg").write_text("not an image")
    (d / "5.jpg").write_bytes((d / "5.jpg").read_bytes()[:200])
    (d / "7.jpg").unlink()
    (d / "7.jpg").mkdir()
    patch_jpeg_size(d / "8.jpg", 20_000, 1)
    (d / "9.jpg").unlink()
    (d / "10.jpg").write_bytes((d / "10.jpg").read_bytes()[:-300])  # cut copy: header intact
    out = msgs(data, decode_covers=decode)
    assert len(out) == 2, out
    assert out[0] == "item_images: 1 of 300 cover images missing (first: 9.jpg)"
    assert out[1].startswith("item_images: 6 of 300 cover images unusable: 3.jpg is empty (0 bytes); ")
    for name, why in (("3.jpg", "is empty (0 bytes)"), ("4.jpg", "is not an image"),
                      ("5.jpg", "is corrupt or truncated"), ("7.jpg", "is a folder"),
                      ("8.jpg", "is 20000x1 pixels")):  # 10.jpg is the 6th, not shown
        assert f"{name} {why}" in out[1], (name, out[1])
    assert msgs(data, images=False) == []


def test_validate_flags_float64_embeddings(data):
    rewrite(data / C.ITEM_INFO.relpath, lambda t: set_column(
        t, C.ITEM_EMB, t.column(C.ITEM_EMB).cast(pa.list_(pa.float64()))))
    assert msgs(data, images=False) == [
        "MicroLens_1M_x1/item_info.parquet:item_emb_d128: values are float64, expected exactly float32 "
        "(the contract's list<float> of float32: cast before writing)"]


def test_validate_catches_shuffled_item_info_renumbered(data):
    def shuffle(t):
        order = np.r_[0, np.random.default_rng(0).permutation(np.arange(1, t.num_rows))]
        t = t.take(order)
        return set_column(t, C.ITEM_ID, pa.array(np.arange(t.num_rows), type=pa.int64()))
    rewrite(data / C.ITEM_INFO.relpath, shuffle)
    out = msgs(data, images=False)
    assert len(out) == 1 and out[0].startswith("MicroLens_1M_x1/item_info.parquet:item_tags row ")
    assert "item_tags differ from item_feature.parquet's tags of that item_id" in out[0]


def test_validate_flags_float_item_ids(data):
    rewrite(data / C.TRAIN.relpath, lambda t: set_column(t, C.ITEM_ID, pa.array(
        t.column(C.ITEM_ID).to_numpy().astype(np.float64) + 0.5)))
    rewrite(data / C.ITEM_INFO.relpath, lambda t: set_column(t, C.ITEM_ID, pa.array(
        np.arange(t.num_rows, dtype=np.float64))))
    out = msgs(data, images=False)
    assert "MicroLens_1M_x1/train.parquet:item_id: has type double, expected int (float ids are " \
           "refused, not truncated: write integers)" in out
    assert any(m.startswith("MicroLens_1M_x1/item_info.parquet:item_id: has type double") for m in out)


@pytest.mark.parametrize("table", [C.TRAIN, C.VALID, C.TEST, C.ITEM_SEQ_TABLE])
def test_validate_flags_negative_sequence_ids(data, table):
    def corrupt(t):
        seqs = t.column(C.ITEM_SEQ).to_pylist()
        seqs[6][-2] = -3
        return set_column(t, C.ITEM_SEQ, pa.array(seqs, type=pa.list_(pa.int64())))
    rewrite(data / table.relpath, corrupt)
    assert msgs(data, images=False) == [
        f"{table.relpath}:item_seq row 6: value outside [0, 300] or not finite"]


def test_validate_negative_ids_flagged_without_item_info(data):
    def corrupt(t):
        seqs = t.column(C.ITEM_SEQ).to_pylist()
        seqs[2][-1] = -1
        return set_column(t, C.ITEM_SEQ, pa.array(seqs, type=pa.list_(pa.int64())))
    rewrite(data / C.ITEM_SEQ_TABLE.relpath, corrupt)
    problems = validate_table(data / C.ITEM_SEQ_TABLE.relpath, C.ITEM_SEQ_TABLE)
    assert [str(p) for p in problems] == ["item_seq.parquet:item_seq row 2: value outside [0, None] or not finite"]


@pytest.mark.parametrize("table", [C.ITEM_INFO, C.ITEM_FEATURE])
def test_validate_bounds_tag_ids(data, table):
    rewrite(data / table.relpath, lambda t: with_list_value(t, C.ITEM_TAGS, 4, 4, 2_000_000, pa.int64()))
    out = msgs(data, images=False)
    assert f"{table.relpath}:item_tags row 4: value outside [0, {C.TAG_VOCAB}] or not finite" in out
    assert len(out) == 2  # and the two files' tags no longer agree on that item
    assert any("item_tags differ from item_feature" in m for m in out)


@pytest.mark.parametrize("rows", [0, 1])
def test_validate_empty_item_info_is_one_clear_message(data, rows):
    rewrite(data / C.ITEM_INFO.relpath, lambda t: t.slice(0, rows))
    assert msgs(data) == [f"MicroLens_1M_x1/item_info.parquet: has no items ({rows} row(s); row 0 is "
                          "padding, items start at row 1)"]


def test_validate_cli_never_writes_into_the_data_dir(data):
    (data / C.IMAGES_DIR / "3.jpg").write_bytes(b"")
    before = snapshot(data)
    r = subprocess.run([sys.executable, "-m", "mmctr", "validate", "--data-dir", str(data)],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 1 and "3.jpg is empty (0 bytes)" in r.stderr
    assert snapshot(data) == before

"""mmctr.item_info: read_item_info / write_item_info refuse what the contract does not allow."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.item_info import read_item_info, write_item_info

from conftest import set_column, with_list_value


def info_copy(tiny_data, tmp_path, fn):
    t = pq.read_table(tiny_data / C.ITEM_INFO.relpath)
    p = tmp_path / "item_info.parquet"
    pq.write_table(fn(t), p)
    return p


def test_read_item_info_ok(tiny_data):
    tags, emb = read_item_info(tiny_data / C.ITEM_INFO.relpath)
    assert tags.dtype == np.int64 and emb.dtype == np.float32 and len(tags) == len(emb) == 301
    assert tags.flags.writeable and emb.flags.writeable  # callers edit them


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_read_item_info_refuses_non_finite_naming_row(tiny_data, tmp_path, value):
    p = info_copy(tiny_data, tmp_path, lambda t: with_list_value(t, C.ITEM_EMB, 42, 3, value, pa.float32()))
    with pytest.raises(KitError, match=r"item_info.parquet:item_emb_d128 row 42 holds NaN or inf"):
        read_item_info(p)


def test_read_item_info_refuses_float64_embeddings(tiny_data, tmp_path):
    p = info_copy(tiny_data, tmp_path, lambda t: set_column(
        t, C.ITEM_EMB, t.column(C.ITEM_EMB).cast(pa.list_(pa.float64()))))
    with pytest.raises(KitError, match=r"item_emb_d128 has type list<.*double>, expected a list of 128 float32"):
        read_item_info(p)


def test_read_item_info_refuses_float_item_ids(tiny_data, tmp_path):
    p = info_copy(tiny_data, tmp_path, lambda t: set_column(
        t, C.ITEM_ID, pa.array(np.arange(t.num_rows) + 0.4)))
    with pytest.raises(KitError, match=r"item_id has type double, expected integers \(float ids are refused"):
        read_item_info(p)


@pytest.mark.parametrize("rows", [0, 1])
def test_read_item_info_empty_is_clear(tiny_data, tmp_path, rows):
    p = info_copy(tiny_data, tmp_path, lambda t: t.slice(0, rows))
    with pytest.raises(KitError, match=rf"has no items \({rows} row\(s\)\)"):
        read_item_info(p)


@pytest.mark.parametrize("tag", [2_000_000, -7, C.TAG_VOCAB + 1])
def test_read_item_info_bounds_tag_ids_naming_row(tiny_data, tmp_path, tag):
    p = info_copy(tiny_data, tmp_path, lambda t: with_list_value(t, C.ITEM_TAGS, 9, 4, tag, pa.int64()))
    with pytest.raises(KitError, match=rf"item_tags row 9 has tag id {tag} outside 0..11740"):
        read_item_info(p)
    ok = info_copy(tiny_data, tmp_path, lambda t: with_list_value(t, C.ITEM_TAGS, 9, 4, C.TAG_VOCAB, pa.int64()))
    assert read_item_info(ok)[0][9, 4] == C.TAG_VOCAB


def test_read_item_info_not_parquet_and_nulls(tiny_data, tmp_path):
    p = tmp_path / "item_info.parquet"
    p.write_text("item_id,item_tags\n0,1\n")
    with pytest.raises(KitError, match="is not a readable parquet file"):
        read_item_info(p)
    p = info_copy(tiny_data, tmp_path, lambda t: with_list_value(t, C.ITEM_EMB, 5, 0, None, pa.float32()))
    with pytest.raises(KitError, match="item_emb_d128 row 5 holds a null value"):
        read_item_info(p)


def test_write_item_info_bounds_tags(tmp_path):
    tags, emb = np.zeros((4, C.TAGS_LEN), np.int64), np.ones((4, C.EMB_DIM), np.float32)
    tags[2, 1] = 2_000_000
    with pytest.raises(KitError, match=r"item_tags row 2 has tag id 2000000"):
        write_item_info(tmp_path / "x.parquet", tags, emb)
    assert not (tmp_path / "x.parquet").exists()

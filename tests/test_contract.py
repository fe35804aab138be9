"""The data contract: validate() passes on sample data and names every class of corruption."""
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.paths import DataPaths
from mmctr.validate import validate

from conftest import ROOT


@pytest.fixture()
def data(data_copy):
    return data_copy


def rewrite(path, fn):
    t = pq.read_table(path)
    pq.write_table(fn(t), path)


def set_column(t: pa.Table, name: str, values) -> pa.Table:
    i = t.column_names.index(name)
    return t.set_column(i, name, pa.array(values) if not isinstance(values, pa.Array) else values)


def messages(data):
    return [str(v) for v in validate(data)]


def test_sample_is_valid(tiny_data):
    assert validate(tiny_data) == []


def test_paths_accept_root_or_ctr_dir(tiny_data):
    assert DataPaths.resolve(tiny_data).root == tiny_data.resolve()
    assert DataPaths.resolve(tiny_data / C.CTR_DIR).root == tiny_data.resolve()
    with pytest.raises(KitError, match="does not look like the challenge data"):
        DataPaths.resolve(tiny_data / "item_images")


def test_missing_column(data):
    rewrite(data / C.TRAIN.relpath, lambda t: t.drop_columns([C.LIKES]))
    assert any("train.parquet:likes_level: missing column 'likes_level'" in m for m in messages(data))


def test_wrong_dtype(data):
    rewrite(data / C.VALID.relpath,
            lambda t: set_column(t, C.ITEM_ID, [str(x) for x in t.column(C.ITEM_ID).to_pylist()]))
    assert any("valid.parquet:item_id: has type string, expected int" in m for m in messages(data))


def test_item_id_out_of_range_names_row(data):
    def corrupt(t):
        ids = t.column(C.ITEM_ID).to_numpy().copy()
        ids[7] = 10_000
        return set_column(t, C.ITEM_ID, ids)
    rewrite(data / C.TEST.relpath, corrupt)
    assert any(m.startswith("MicroLens_1M_x1/test.parquet:item_id row 7:") and "outside" in m for m in messages(data))


def test_sequence_item_out_of_range(data):
    def corrupt(t):
        seqs = t.column(C.ITEM_SEQ).to_pylist()
        seqs[3][-1] = 99_999
        return set_column(t, C.ITEM_SEQ, pa.array(seqs, type=pa.list_(pa.int64())))
    rewrite(data / C.TRAIN.relpath, corrupt)
    assert any("train.parquet:item_seq row 3:" in m for m in messages(data))


def test_item_info_row_order(data):
    rewrite(data / C.ITEM_INFO.relpath,
            lambda t: pa.concat_tables([t.slice(0, 5), t.slice(6, 1), t.slice(5, 1), t.slice(7)]))
    assert any("item_info.parquet:item_id row 5: row order broken" in m for m in messages(data))


def test_embedding_not_128d_and_nan(data):
    def corrupt(t):
        emb = t.column(C.ITEM_EMB).to_pylist()
        emb[4] = emb[4][:127]
        emb[9][3] = float("nan")
        return set_column(t, C.ITEM_EMB, pa.array(emb, type=pa.list_(pa.float32())))
    rewrite(data / C.ITEM_INFO.relpath, corrupt)
    msgs = messages(data)
    assert any("item_emb_d128 row 4: list length is not 128" in m for m in msgs)
    assert any("item_emb_d128 row 9: NaN or infinite value" in m for m in msgs)


def test_row0_must_be_zero(data):
    def corrupt(t):
        emb = t.column(C.ITEM_EMB).to_pylist()
        emb[0] = [0.5] * 128
        return set_column(t, C.ITEM_EMB, pa.array(emb, type=pa.list_(pa.float32())))
    rewrite(data / C.ITEM_INFO.relpath, corrupt)
    assert any("item_emb_d128 row 0: row 0 (padding) must be all zero" in m for m in messages(data))


def test_label_not_binary(data):
    def corrupt(t):
        y = t.column(C.LABEL).to_numpy().copy()
        y[11] = 0.5
        return set_column(t, C.LABEL, y)
    rewrite(data / C.TRAIN.relpath, corrupt)
    assert any("train.parquet:label row 11: label is not 0 or 1" in m for m in messages(data))


def test_missing_image_and_file(data):
    (data / C.IMAGES_DIR / "17.jpg").unlink()
    (data / C.ITEM_SEQ_TABLE.relpath).unlink()
    msgs = messages(data)
    assert any(m.startswith("item_images: 1 of 300 cover images missing (first: 17.jpg)") for m in msgs)
    assert any(m == "item_seq.parquet: file missing" for m in msgs)


def test_unreadable_parquet(data):
    (data / C.VALID.relpath).write_bytes(b"not parquet at all")
    assert any("valid.parquet: cannot be read as parquet" in m for m in messages(data))


def test_cli_validate_exit_codes(data, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "mmctr", "validate", "--data-dir", str(data)],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    (data / C.IMAGES_DIR / "3.jpg").unlink()
    bad = subprocess.run([sys.executable, "-m", "mmctr", "validate", "--data-dir", str(data)],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "3.jpg" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "mmctr", "validate", "--data-dir", str(tmp_path / "nope")],
                             capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2 and "data directory not found" in missing.stderr
    assert "Traceback" not in missing.stderr

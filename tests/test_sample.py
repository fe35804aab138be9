"""The sample generator: organisers' layout, deterministic, with a planted signal."""
import hashlib

import numpy as np
import pyarrow.parquet as pq

from mmctr import contract as C
from mmctr.metrics import roc_auc
from mmctr.sample import SampleConfig, generate, read_truth, summary

from conftest import TINY


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic(tiny_data, tmp_path):
    again = tmp_path / "again"
    generate(again, TINY)
    assert digest(again) == digest(tiny_data)
    other = tmp_path / "other"
    generate(other, SampleConfig(**{**TINY.__dict__, "seed": 1}))
    assert digest(other) != digest(tiny_data)


def test_layout_and_sizes(tiny_data):
    for table in C.ALL_TABLES:
        assert (tiny_data / table.relpath).is_file(), table.relpath
    assert pq.read_metadata(tiny_data / C.TRAIN.relpath).num_rows == TINY.n_train
    assert pq.read_metadata(tiny_data / C.TEST.relpath).num_rows == TINY.n_test
    assert C.LABEL not in pq.read_schema(tiny_data / C.TEST.relpath).names  # test labels hidden
    assert pq.read_metadata(tiny_data / C.ITEM_INFO.relpath).num_rows == TINY.n_items + 1
    assert len(list((tiny_data / C.IMAGES_DIR).glob("*.jpg"))) == TINY.n_items
    assert pq.read_schema(tiny_data / C.ITEM_INFO.relpath).equals(C.ITEM_INFO_ARROW, check_metadata=False)


def test_sequences_follow_real_statistics(tiny_data):
    seqs = np.array(pq.read_table(tiny_data / C.ITEM_SEQ_TABLE.relpath).column(C.ITEM_SEQ).to_pylist())
    lengths = (seqs > 0).sum(1)
    assert lengths.min() >= 3
    assert 4 <= np.median(lengths) <= 8
    # left-padded, most recent last: no zero after the first non-zero
    first = np.argmax(seqs > 0, axis=1)
    assert all((row[f:] > 0).all() for row, f in zip(seqs, first))


def test_planted_signal_and_positive_rate(tiny_data):
    p, y = read_truth(tiny_data, "valid")
    assert 0.18 < y.mean() < 0.32
    oracle = roc_auc(y, p)
    assert oracle > 0.75
    assert abs(summary(tiny_data)["valid_oracle_auc"] - oracle) < 1e-12
    # seeing only the sequence, not the user, caps what any model can reach
    assert 0.6 < summary(tiny_data)["valid_seq_oracle_auc"] < oracle
    train_y = pq.read_table(tiny_data / C.TRAIN.relpath).column(C.LABEL).to_numpy()
    assert 0.18 < train_y.mean() < 0.32

"""Test rows inside the training data, by content: one 64-bit hash per row of the feature tuple
(user_id, item_id, item_seq, likes_level, views_level), vectorised over Arrow buffers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmctr import contract as C
from mmctr.io import read_parquet

FEATURES = (C.USER_ID, C.ITEM_ID, C.ITEM_SEQ, C.LIKES, C.VIEWS)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return x


def _ints(col) -> np.ndarray:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False).view(np.uint64)


def _seq_hash(col) -> np.ndarray:
    """Per row: a hash of the whole list (values and their positions, and the length)."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if isinstance(col, pa.ChunkedArray):  # an empty table
        col = pa.array([], pa.list_(pa.int64()))
    offsets = col.offsets.to_numpy().astype(np.int64)
    values = pc.cast(col.values, pa.int64()).to_numpy(zero_copy_only=False).view(np.uint64)
    values = values[offsets[0]:offsets[-1]]
    lengths = np.diff(offsets)
    pos = np.arange(len(values), dtype=np.int64) - np.repeat(offsets[:-1] - offsets[0], lengths)
    sums = np.zeros(len(lengths), np.uint64)
    if len(values):
        with np.errstate(over="ignore"):
            h = _mix(values ^ _mix(pos.view(np.uint64) + _GOLDEN))
            starts = np.minimum(offsets[:-1] - offsets[0], len(h) - 1)
            sums = np.where(lengths > 0, np.add.reduceat(h, starts), np.uint64(0))  # empty rows: 0
    return _mix(sums ^ _mix(lengths.astype(np.uint64)))


SCALARS = (C.USER_ID, C.ITEM_ID, C.LIKES, C.VIEWS)


def _combine(table: pa.Table, names) -> np.ndarray:
    h = np.full(table.num_rows, _GOLDEN, np.uint64)
    with np.errstate(over="ignore"):
        for i, name in enumerate(names):
            col = table.column(name)
            part = _seq_hash(col) if name == C.ITEM_SEQ else _mix(_ints(col))
            h = _mix(h * np.uint64(31 + 2 * i) + part)
    return h


def row_hashes(table: pa.Table) -> np.ndarray:
    """uint64 hash of each row's feature tuple; equal tuples give equal hashes."""
    return _combine(table, FEATURES)


def _tuples(table: pa.Table, idx: np.ndarray) -> list:
    sub = table.take(pa.array(idx, pa.int64())).to_pydict()
    return [tuple(tuple(v) if isinstance(v, list) else v for v in row)
            for row in zip(*(sub[n] for n in FEATURES))]


def copied_rows_in(test: pa.Table, train: pa.Table) -> int:
    """How many test rows appear, with the exact same feature tuple, among the train rows.

    The scalar columns are hashed first (cheap); only rows that agree on them get their
    item_seq hashed, and hash matches are confirmed on the exact tuples.
    """
    ks_test, ks_train = _combine(test, SCALARS), _combine(train, SCALARS)
    cand_train = np.flatnonzero(np.isin(ks_train, ks_test))
    if not cand_train.size:
        return 0
    cand_test = np.flatnonzero(np.isin(ks_test, ks_train[cand_train]))
    sub_test = test.take(pa.array(cand_test, pa.int64()))
    sub_train = train.take(pa.array(cand_train, pa.int64()))
    ht, hr = row_hashes(sub_test), row_hashes(sub_train)
    hit = np.flatnonzero(np.isin(ht, hr))
    if not hit.size:
        return 0
    pool = set(_tuples(sub_train, np.flatnonzero(np.isin(hr, ht[hit]))))
    return sum(t in pool for t in _tuples(sub_test, hit))


def copied_rows(test_path, train_path) -> int:
    """copied_rows_in over two parquet files; item_seq is read only when scalars agree somewhere."""
    test = read_parquet(test_path, columns=list(SCALARS), what="test")
    train = read_parquet(train_path, columns=list(SCALARS), what=Path(train_path).stem)
    if not np.isin(_combine(train, SCALARS), _combine(test, SCALARS)).any():
        return 0
    return copied_rows_in(read_parquet(test_path, columns=list(FEATURES), what="test"),
                          read_parquet(train_path, columns=list(FEATURES), what=Path(train_path).stem))

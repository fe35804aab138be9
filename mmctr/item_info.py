"""Read and write item_info.parquet exactly as the organisers' CTR code reads it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import contract as C
from .errors import KitError
from .io import write_parquet


def _fixed_list(mat: np.ndarray, value_type) -> pa.Array:
    mat = np.ascontiguousarray(mat)
    offsets = pa.array(np.arange(0, mat.size + 1, mat.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(mat.ravel(), type=value_type))


def write_item_info(path, tags: np.ndarray, emb: np.ndarray) -> None:
    """Write item_info atomically: row i = item i, row 0 all-zero padding.

    tags: (n_items + 1, 5) int, emb: (n_items + 1, 128) float. Row 0 is zeroed here.
    """
    tags = np.asarray(tags, dtype=np.int64)
    emb = np.asarray(emb, dtype=np.float32)
    if tags.ndim != 2 or tags.shape[1] != C.TAGS_LEN:
        raise KitError(f"item_tags must be (n_items+1, {C.TAGS_LEN}), got {tags.shape}")
    if emb.ndim != 2 or emb.shape[1] != C.EMB_DIM:
        raise KitError(f"item_emb_d128 must be (n_items+1, {C.EMB_DIM}), got {emb.shape}")
    if len(tags) != len(emb):
        raise KitError(f"item_tags has {len(tags)} rows but item_emb_d128 has {len(emb)}")
    bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    if bad.size:
        raise KitError(f"item_emb_d128 has NaN/inf in {bad.size} rows (first item: {bad[0]})")
    tags, emb = tags.copy(), emb.copy()
    tags[0], emb[0] = 0, 0
    table = pa.Table.from_arrays(
        [pa.array(np.arange(len(emb)), type=pa.int64()), _fixed_list(tags, pa.int64()),
         _fixed_list(emb, pa.float32())], schema=C.ITEM_INFO_ARROW)
    write_parquet(path, table)


def read_item_info(path):
    """Return (tags int64 (n+1, 5), emb float32 (n+1, 128)); fail clearly if off-contract."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"item_info not found: {path}")
    t = pq.read_table(path)
    missing = [c for c in C.ITEM_INFO.names if c not in t.column_names]
    if missing:
        raise KitError(f"{path}: missing column(s) {missing}")
    ids = t.column(C.ITEM_ID).to_numpy()
    wrong = np.flatnonzero(ids != np.arange(len(ids)))
    if wrong.size:
        raise KitError(f"{path}: row order broken at row {wrong[0]} (item_id {ids[wrong[0]]}); "
                       "row i must hold item i")
    tags = _to_matrix(t.column(C.ITEM_TAGS), C.TAGS_LEN, np.int64, path, C.ITEM_TAGS)
    emb = _to_matrix(t.column(C.ITEM_EMB), C.EMB_DIM, np.float32, path, C.ITEM_EMB)
    return tags, emb


def _to_matrix(col, width: int, dtype, path, name: str) -> np.ndarray:
    col = col.combine_chunks()
    lengths = col.value_lengths().to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != width)
    if bad.size:
        raise KitError(f"{path}:{name} row {bad[0]} has length {lengths[bad[0]]}, expected {width}")
    return col.flatten().to_numpy(zero_copy_only=False).astype(dtype).reshape(-1, width)

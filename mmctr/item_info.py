"""Read and write item_info.parquet exactly as the organisers' CTR code reads it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import contract as C
from .errors import KitError
from .io import read_parquet, write_parquet


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
    _check_tag_range(tags, "item_tags")
    table = pa.Table.from_arrays(
        [pa.array(np.arange(len(emb)), type=pa.int64()), _fixed_list(tags, pa.int64()),
         _fixed_list(emb, pa.float32())], schema=C.ITEM_INFO_ARROW)
    write_parquet(path, table)


def read_item_info(path):
    """Return (tags int64 (n+1, 5), emb float32 (n+1, 128)); one KitError naming the file,
    column and first bad row when the file is off-contract (types, order, lengths, nulls,
    NaN/inf embeddings, tag ids outside 0..TAG_VOCAB, no items)."""
    path = Path(path)
    t = read_parquet(path, what="item_info")
    missing = [c for c in C.ITEM_INFO.names if c not in t.column_names]
    if missing:
        raise KitError(f"{path}: missing column(s) {missing} (has: {t.column_names})")
    if t.num_rows <= 1:
        raise KitError(f"{path} has no items ({t.num_rows} row(s)): row 0 is padding and "
                       "row i must hold item i for every item")
    id_col = t.column(C.ITEM_ID)
    if not pa.types.is_integer(id_col.type):
        raise KitError(f"{path}:{C.ITEM_ID} has type {id_col.type}, expected integers "
                       "(float ids are refused, not truncated)")
    _no_nulls(id_col, path, C.ITEM_ID)
    ids = id_col.to_numpy()
    wrong = np.flatnonzero(ids != np.arange(len(ids)))
    if wrong.size:
        raise KitError(f"{path}: row order broken at row {wrong[0]} (item_id {ids[wrong[0]]}); "
                       "row i must hold item i")
    tags = _to_matrix(t.column(C.ITEM_TAGS), C.TAGS_LEN, pa.types.is_integer, "integers", path, C.ITEM_TAGS)
    emb = _to_matrix(t.column(C.ITEM_EMB), C.EMB_DIM, lambda v: v == pa.float32(), "float32",
                     path, C.ITEM_EMB)
    _check_tag_range(tags, f"{path}:{C.ITEM_TAGS}")
    bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    if bad.size:
        raise KitError(f"{path}:{C.ITEM_EMB} row {bad[0]} holds NaN or inf"
                       f"{f' ({bad.size} rows in all)' if bad.size > 1 else ''}: embeddings must be finite")
    return tags.astype(np.int64, copy=False), emb


def _check_tag_range(tags: np.ndarray, where: str) -> None:
    out = (tags < 0) | (tags > C.TAG_VOCAB)
    bad = np.flatnonzero(out.any(axis=1))
    if bad.size:
        row = int(bad[0])
        more = f"; {bad.size} rows in all" if bad.size > 1 else ""
        raise KitError(f"{where} row {row} has tag id {tags[row][out[row]][0]} outside "
                       f"0..{C.TAG_VOCAB} (the challenge's tag vocabulary; 0 = padding){more}")


def _no_nulls(col, path, name: str) -> None:
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise KitError(f"{path}:{name} row {row} is null")


def _to_matrix(col, width: int, value_ok, value_kind: str, path, name: str) -> np.ndarray:
    col = col.combine_chunks()
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
            or pa.types.is_fixed_size_list(col.type)) or not value_ok(col.type.value_type):
        raise KitError(f"{path}:{name} has type {col.type}, expected a list of {width} {value_kind}")
    _no_nulls(col, path, name)
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != width)
    if bad.size:
        raise KitError(f"{path}:{name} row {bad[0]} has length {lengths[bad[0]]}, expected {width}")
    values = pc.list_flatten(col)
    if values.null_count:
        parents = pc.list_parent_indices(col).to_numpy()
        row = int(parents[values.is_null().to_numpy(zero_copy_only=False)][0])
        raise KitError(f"{path}:{name} row {row} holds a null value")
    return np.array(values.to_numpy(zero_copy_only=False)).reshape(-1, width)  # a writable copy

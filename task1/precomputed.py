"""Precomputed item features as a part: a list column of item_feature.parquet (the provided
txt_emb_BERT, img_emb_CLIPRN50) or a user's own file keyed by item_id.

Files: parquet with `item_id` and one list column (or `file_column`), or .npy whose row i is
item i (n_items + 1 rows, row 0 = padding), read with allow_pickle=False. An item with no row,
a null or an all-zero vector has no feature and takes the part's fallback.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.io import check_alloc, file_sha256, read_parquet, read_parquet_schema
from mmctr.paths import DataPaths

from .config import MAX_FEATURE_DIM, SourceCfg


def _is_list(t) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_number(t) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t)


def _check_dim(d: int, where: str) -> None:
    if not 1 <= d <= MAX_FEATURE_DIM:
        raise KitError(f"{where}: feature vectors have {d} values; allowed 1..{MAX_FEATURE_DIM}")


def _from_list_column(col, ids: np.ndarray, n: int, where: str):
    """(emb (n+1, d) float32, has (n+1,)) from a list column whose rows are items `ids`."""
    col = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    if not _is_list(col.type) or not _is_number(col.type.value_type):
        raise KitError(f"{where} must be a list of numbers, got {col.type}")
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    lengths = col.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    d = int(lengths[valid].max()) if valid.any() else 0
    _check_dim(max(d, 1), where)
    wrong = valid & (lengths != d)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise KitError(f"{where}: item {ids[i]} has {lengths[i]} values, the others {d}")
    check_alloc(2 * (n + 1) * d * 4, f"{where} ({n + 1} x {d} float32)")
    emb = np.zeros((n + 1, d), dtype=np.float32)
    if d and valid.any():
        every = bool(valid.all())
        values = (col if every else col.filter(pa.array(valid))).flatten().to_numpy(zero_copy_only=False)
        values = np.asarray(values, dtype=np.float32).reshape(-1, d)
        if every and len(ids) == n and (ids == np.arange(1, n + 1)).all():
            emb[1:] = values  # the usual layout, rows in item order: one contiguous copy
        else:
            emb[ids[valid]] = values
    return emb, _finite(emb, where)


def _finite(emb: np.ndarray, where: str) -> np.ndarray:
    if emb.shape[1] == 0:
        return np.zeros(len(emb), bool)
    # row max and min: two passes without (n, d) temporaries; NaN propagates, inf shows as such
    high, low = emb.max(axis=1), emb.min(axis=1)
    bad = ~(np.isfinite(high) & np.isfinite(low))
    if bad.any():
        raise KitError(f"{where}: item {int(np.flatnonzero(bad)[0])} has a NaN or infinite value")
    has = (high != 0) | (low != 0)
    has[0] = False
    return has


def _ids(table, where: str, n: int) -> np.ndarray:
    if C.ITEM_ID not in table.column_names or not pa.types.is_integer(table.schema.field(C.ITEM_ID).type):
        raise KitError(f"{where}: needs an integer {C.ITEM_ID} column")
    ids = table.column(C.ITEM_ID).to_numpy(zero_copy_only=False).astype(np.int64)
    bad = (ids < 1) | (ids > n)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise KitError(f"{where}: row {i} has {C.ITEM_ID} {ids[i]}; ids are 1..{n}")
    if len(np.unique(ids)) != len(ids):
        raise KitError(f"{where}: {C.ITEM_ID} repeats; one row per item")
    return ids


def _column(src: SourceCfg, feature_path: Path, n: int):
    schema = read_parquet_schema(feature_path, "item_feature")
    if src.column not in schema.names:
        lists = [f.name for f in schema if _is_list(f.type)]
        raise KitError(f"{feature_path}: no column '{src.column}' (list columns there: {', '.join(lists) or 'none'})")
    t = read_parquet(feature_path, [C.ITEM_ID, src.column], "item_feature")
    return _from_list_column(t.column(src.column), _ids(t, str(feature_path), n), n,
                             f"{feature_path}: column {src.column}")


def _npy(path: Path, n: int):
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise KitError(f"precomputed file {path} is not a readable .npy array: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] != n + 1:
        raise KitError(f"precomputed file {path} has shape {arr.shape}; expected ({n + 1}, d): "
                       f"row i = item i, row 0 = padding")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise KitError(f"precomputed file {path} holds {arr.dtype}; give real numbers")
    _check_dim(arr.shape[1], f"precomputed file {path}")
    check_alloc(arr.shape[0] * arr.shape[1] * 4, f"precomputed file {path} ({arr.shape[0]} x {arr.shape[1]} float32)")
    emb = np.array(arr, dtype=np.float32)
    emb[0] = 0
    return emb, _finite(emb, f"precomputed file {path}")


def _parquet(path: Path, column, n: int):
    schema = read_parquet_schema(path, "precomputed")
    lists = [f.name for f in schema if _is_list(f.type)]
    if column is None:
        if len(lists) != 1:
            raise KitError(f"precomputed file {path}: set file_column to one of its list columns "
                           f"({', '.join(lists) or 'none found'})")
        column = lists[0]
    elif column not in schema.names:
        raise KitError(f"precomputed file {path}: no column '{column}' (list columns: {', '.join(lists) or 'none'})")
    t = read_parquet(path, [C.ITEM_ID, column] if C.ITEM_ID in schema.names else [column], "precomputed")
    return _from_list_column(t.column(column), _ids(t, str(path), n), n, f"{path}: column {column}")


def load_source(src: SourceCfg, paths: DataPaths, n: int, feature_path: Path, known: dict | None = None):
    """(emb (n+1, d) float32, has (n+1,), report, {path: sha256} read) of one source; `known`:
    {path: sha256} already hashed in this build (item_feature.parquet is hashed once, not per column)."""
    if src.column is not None:
        emb, has = _column(src, feature_path, n)
        key = str(feature_path.resolve())
        read = {key: (known or {}).get(key) or file_sha256(feature_path)}
        origin = {"column": src.column, "file": str(feature_path.resolve())}
    else:
        path = Path(src.file).expanduser()
        if not path.is_file():
            raise KitError(f"precomputed file not found: {path}")
        if paths.root in path.resolve().parents:  # e.g. test.parquet: never a feature source
            raise KitError(f"precomputed file {path} is inside the data directory {paths.root}: the data's "
                           f"own features are read with 'column' (a list column of item_feature.parquet)")
        if path.suffix == ".npy":
            emb, has = _npy(path, n)
        elif path.suffix == ".parquet":
            emb, has = _parquet(path, src.file_column, n)
        else:
            raise KitError(f"precomputed file {path}: give a .parquet (item_id + a list column) or a .npy")
        sha = file_sha256(path)
        read = {str(path.resolve()): sha}
        origin = {"file": str(path.resolve()), "sha256": sha, "column": src.file_column}
    report = {**origin, "dim": int(emb.shape[1]), "weight": src.weight,
              "items_without_feature": int(n - has[1:].sum()), "cache_hit": None}
    return emb, has, report, read

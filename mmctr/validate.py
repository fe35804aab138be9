"""Check a data directory against the contract; report every violation with file, column, row."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import contract as C
from .paths import DataPaths

SHOW_ROWS = 5


@dataclass(frozen=True)
class Violation:
    file: str
    column: Optional[str]
    rows: tuple  # first offending row indices (may be empty for file-level problems)
    count: int  # how many rows are affected (0 for file-level problems)
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.column}" if self.column else "")
        if self.rows:
            more = f" ({self.count} rows; first: {', '.join(map(str, self.rows))})" if self.count > 1 else ""
            return f"{where} row {self.rows[0]}: {self.message}{more}"
        return f"{where}: {self.message}"


def _kind_ok(kind: str, t: pa.DataType) -> bool:
    if kind == C.INT:
        return pa.types.is_integer(t)
    if kind == C.FLOAT:
        return pa.types.is_floating(t) or pa.types.is_integer(t)
    if kind == C.STR:
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = t.value_type
        return pa.types.is_integer(inner) if kind == C.LIST_INT else (
            pa.types.is_floating(inner))
    return False


class _Checker:
    def __init__(self, fname: str):
        self.fname = fname
        self.out: list = []

    def file_error(self, message: str, column: Optional[str] = None) -> None:
        self.out.append(Violation(self.fname, column, (), 0, message))

    def rows(self, column: str, bad_mask: np.ndarray, message: str) -> None:
        idx = np.flatnonzero(bad_mask)
        if idx.size:
            self.out.append(Violation(self.fname, column, tuple(int(i) for i in idx[:SHOW_ROWS]),
                                      int(idx.size), message))


def _list_rows(arr: pa.ChunkedArray, value_bad: np.ndarray, n_rows: int) -> np.ndarray:
    """Map a mask over flattened list values back to a mask over rows."""
    parents = pc.list_parent_indices(arr).to_numpy()
    mask = np.zeros(n_rows, dtype=bool)
    mask[parents[value_bad]] = True
    return mask


def check_column(chk: _Checker, col: C.Column, arr: pa.ChunkedArray, n_items: Optional[int]) -> None:
    n = len(arr)
    if not _kind_ok(col.kind, arr.type):
        chk.file_error(f"has type {arr.type}, expected {col.kind}", col.name)
        return
    nulls = arr.is_null().to_numpy(zero_copy_only=False)
    chk.rows(col.name, nulls, "null value")
    if col.kind == C.STR:
        return
    lo, hi = col.lo, col.hi
    if col.item_ref and n_items is not None:
        lo, hi = (0 if col.kind == C.LIST_INT else 1), n_items
    if col.kind in (C.LIST_INT, C.LIST_FLOAT):
        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy()
        if col.length is not None:
            chk.rows(col.name, (lengths != col.length) & ~nulls, f"list length is not {col.length}")
        elif col.item_ref:
            chk.rows(col.name, (lengths == 0) & ~nulls, "empty sequence")
        values = pc.list_flatten(arr).to_numpy(zero_copy_only=False)
    else:
        values = arr.to_numpy(zero_copy_only=False)
    if values.dtype == object:  # nulls present in a scalar column: already reported
        return
    values = values.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    bad_vals = ~finite
    msg = "NaN or infinite value"
    if lo is not None:
        bad_vals |= finite & (values < lo)
    if hi is not None:
        bad_vals |= finite & (values > hi)
    if lo is not None or hi is not None:
        msg = f"value outside [{lo}, {hi}] or not finite"
    if col.kind in (C.LIST_INT, C.LIST_FLOAT):
        chk.rows(col.name, _list_rows(arr, bad_vals, n), msg)
    else:
        bad_vals &= ~nulls
        chk.rows(col.name, bad_vals, msg)
    if col.name == C.LABEL:
        chk.rows(col.name, finite & (values != 0) & (values != 1) & ~nulls, "label is not 0 or 1")


def check_table(paths: DataPaths, table: C.Table, n_items: Optional[int]) -> tuple:
    """Return (violations, pyarrow table or None) for one file of the contract."""
    path = paths.table(table)
    chk = _Checker(table.relpath)
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # corrupted or not parquet: report, don't crash
        chk.file_error(f"cannot be read as parquet ({type(exc).__name__}: {exc})")
        return chk.out, None
    present = [c for c in table.columns if c.name in schema.names]
    for c in table.columns:
        if c.required and c.name not in schema.names:
            chk.file_error(f"missing column '{c.name}' (has: {', '.join(schema.names)})", c.name)
    data = pq.read_table(path, columns=[c.name for c in present])
    for c in present:
        check_column(chk, c, data.column(c.name), n_items)
    return chk.out, data


def _check_item_info(data: pa.Table, chk: _Checker) -> None:
    if data.num_rows == 0:
        chk.file_error("is empty")
        return
    if C.ITEM_ID in data.column_names and pa.types.is_integer(data.column(C.ITEM_ID).type):
        ids = data.column(C.ITEM_ID).to_numpy(zero_copy_only=False)
        chk.rows(C.ITEM_ID, ids != np.arange(len(ids)),
                 "row order broken: row i must hold item i (row 0 = padding)")
    for name in (C.ITEM_TAGS, C.ITEM_EMB):
        if name in data.column_names and data.column(name)[0].is_valid:
            first = np.asarray(data.column(name)[0].as_py(), dtype=np.float64)
            if first.size and np.any(first != 0):
                chk.rows(name, np.array([True]), "row 0 (padding) must be all zero")


def _check_item_ids_unique(data: pa.Table, chk: _Checker, n_items: Optional[int]) -> None:
    ids = data.column(C.ITEM_ID).to_numpy(zero_copy_only=False)
    _, first_idx, counts = np.unique(ids, return_index=True, return_counts=True)
    dup = np.zeros(len(ids), dtype=bool)
    dup[np.setdiff1d(np.arange(len(ids)), first_idx)] = True
    chk.rows(C.ITEM_ID, dup, "duplicate item_id")
    if n_items is not None and len(ids) != n_items:
        chk.file_error(f"has {len(ids)} items, item_info.parquet has {n_items}", C.ITEM_ID)


def _check_images(paths: DataPaths, n_items: int, item_ids: Iterable[int]) -> list:
    chk = _Checker(C.IMAGES_DIR)
    d = paths.images_dir
    if not d.is_dir():
        rar = paths.root / C.IMAGES_RAR
        hint = f" ({rar} must be extracted)" if rar.exists() else ""
        chk.file_error(f"folder missing{hint}")
        return chk.out
    have = {p.name for p in d.iterdir()}
    ids = np.fromiter(item_ids, dtype=np.int64)
    missing = np.array([C.image_name(i) not in have for i in ids], dtype=bool)
    idx = np.flatnonzero(missing)
    if idx.size:
        shown = ", ".join(C.image_name(ids[i]) for i in idx[:SHOW_ROWS])
        chk.out.append(Violation(C.IMAGES_DIR, None, (), int(idx.size),
                                 f"{idx.size} of {n_items} cover images missing (first: {shown})"))
    return chk.out


def validate(data_dir, images: bool = True) -> list:
    """Check every file of the layout; return the list of Violations (empty = valid)."""
    paths = DataPaths.resolve(data_dir)
    out: list = []
    n_items = None
    info_path = paths.table(C.ITEM_INFO)
    if info_path.is_file():
        try:
            n_items = pq.read_metadata(info_path).num_rows - 1
        except Exception:
            n_items = None
    for table in C.ALL_TABLES:
        if not paths.table(table).is_file():
            if table not in C.OPTIONAL_TABLES:
                out.append(Violation(table.relpath, None, (), 0, "file missing"))
            continue
        violations, data = check_table(paths, table, n_items)
        out.extend(violations)
        if data is None:
            continue
        chk = _Checker(table.relpath)
        if table is C.ITEM_INFO:
            _check_item_info(data, chk)
        elif table is C.ITEM_FEATURE and C.ITEM_ID in data.column_names:
            _check_item_ids_unique(data, chk, n_items)
        out.extend(chk.out)
    if images and n_items is not None:
        out.extend(_check_images(paths, n_items, range(1, n_items + 1)))
    return out

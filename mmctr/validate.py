"""Check a data directory against the contract; report every violation with file, column, row."""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import contract as C
from .errors import KitError
from .io import read_parquet, read_parquet_metadata, read_parquet_schema
from .paths import DataPaths

SHOW_ROWS = 5
COVER_DECODE_SIDE = 32  # with decode=True covers are fully decoded (JPEG at 1/8 scale) to this size


@dataclass(frozen=True)
class Problem:
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


Violation = Problem  # the former name


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
        self.out.append(Problem(self.fname, column, (), 0, message))

    def rows(self, column: str, bad_mask: np.ndarray, message: str) -> None:
        idx = np.flatnonzero(bad_mask)
        if idx.size:
            self.out.append(Problem(self.fname, column, tuple(int(i) for i in idx[:SHOW_ROWS]),
                                    int(idx.size), message))


def _list_rows(arr: pa.ChunkedArray, value_bad: np.ndarray, n_rows: int) -> np.ndarray:
    """Map a mask over flattened list values back to a mask over rows."""
    parents = pc.list_parent_indices(arr).to_numpy()
    mask = np.zeros(n_rows, dtype=bool)
    mask[parents[value_bad]] = True
    return mask


def _type_hint(kind: str, t: pa.DataType) -> str:
    if kind in (C.INT, C.LIST_INT) and ("float" in str(t) or "double" in str(t)):
        return " (float ids are refused, not truncated: write integers)"
    return ""


def _dtype_name(t: pa.DataType) -> str:
    try:
        return np.dtype(t.to_pandas_dtype()).name
    except (NotImplementedError, TypeError):
        return str(t)


def check_column(chk: _Checker, col: C.Column, arr: pa.ChunkedArray, n_items: Optional[int]) -> None:
    n = len(arr)
    if not _kind_ok(col.kind, arr.type):
        chk.file_error(f"has type {arr.type}, expected {col.kind}{_type_hint(col.kind, arr.type)}", col.name)
        return
    if col.value_type is not None:
        inner = arr.type.value_type if col.kind in (C.LIST_INT, C.LIST_FLOAT) else arr.type
        if inner != col.value_type:
            have, want = _dtype_name(inner), _dtype_name(col.value_type)
            chk.file_error(f"values are {have}, expected exactly {want} (the contract's "
                           f"{col.kind} of {want}: cast before writing)", col.name)
    nulls = arr.is_null().to_numpy(zero_copy_only=False)
    chk.rows(col.name, nulls, "null value")
    if col.kind == C.STR:
        return
    lo, hi = col.lo, col.hi
    if col.item_ref:  # item ids: 0 is padding inside lists only; never negative
        lo = 0 if col.kind == C.LIST_INT else 1
        hi = n_items
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


def _read_checked(path: Path, table: C.Table, n_items: Optional[int], label: str) -> tuple:
    """(problems, pyarrow table or None) for the columns of one file of the contract."""
    chk = _Checker(label)
    try:
        schema = read_parquet_schema(path, what=table.name)
        present = [c for c in table.columns if c.name in schema.names]
        data = read_parquet(path, columns=[c.name for c in present], what=table.name)
    except KitError as exc:  # missing, corrupted or not parquet: report, don't crash
        chk.file_error(f"cannot be read as parquet ({str(exc).rsplit(': ', 1)[-1]})")
        return chk.out, None
    for c in table.columns:
        if c.required and c.name not in schema.names:
            chk.file_error(f"missing column '{c.name}' (has: {', '.join(schema.names)})", c.name)
    for c in present:
        check_column(chk, c, data.column(c.name), n_items)
    return chk.out, data


def _check_item_info(data: pa.Table, chk: _Checker) -> None:
    if data.num_rows <= 1:
        chk.file_error(f"has no items ({data.num_rows} row(s); row 0 is padding, items start at row 1)")
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


def _tag_matrix(data: pa.Table) -> Optional[np.ndarray]:
    col = data.column(C.ITEM_TAGS).combine_chunks()
    if col.null_count or len(col) == 0:
        return None
    lengths = col.value_lengths().to_numpy(zero_copy_only=False)
    if np.any(lengths != C.TAGS_LEN):
        return None
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, C.TAGS_LEN)


def _check_tags_agree(info: pa.Table, feature: pa.Table, n_items: int) -> list:
    """item_info row i must carry item i's tags from item_feature (catches a renumbered file)."""
    chk = _Checker(C.ITEM_INFO.relpath)
    if C.ITEM_TAGS not in info.column_names or C.ITEM_TAGS not in feature.column_names \
            or C.ITEM_ID not in feature.column_names or info.num_rows != n_items + 1:
        return chk.out
    info_tags, feat_tags = _tag_matrix(info), _tag_matrix(feature)
    ids = feature.column(C.ITEM_ID)
    if info_tags is None or feat_tags is None or not pa.types.is_integer(ids.type) or ids.null_count:
        return chk.out
    ids = ids.to_numpy(zero_copy_only=False)
    ok = (ids >= 1) & (ids <= n_items)
    expected = np.full_like(info_tags, -1)
    expected[ids[ok]] = feat_tags[ok]
    known = np.zeros(len(info_tags), dtype=bool)
    known[ids[ok]] = True
    bad = known & (info_tags != expected).any(axis=1)
    chk.rows(C.ITEM_TAGS, bad, "item_tags differ from item_feature.parquet's tags of that item_id "
             "(row i must hold item i: is the file shuffled or renumbered?)")
    return chk.out


def validate_table(path, table: C.Table, n_items: Optional[int] = None, label: Optional[str] = None) -> list:
    """Every contract problem of one parquet file (`table` of mmctr.contract) at `path`.

    n_items bounds item-id columns (None: only non-negativity is checked). Problems name
    `label` (default: the table's path in the layout), the column and the first rows.
    """
    path = Path(path)
    label = label or table.relpath
    if not path.is_file():
        return [Problem(label, None, (), 0, "file missing" if not path.exists() else "is not a file")]
    problems, data = _read_checked(path, table, n_items, label)
    if data is not None:
        chk = _Checker(label)
        if table is C.ITEM_INFO:
            _check_item_info(data, chk)
        elif table is C.ITEM_FEATURE and C.ITEM_ID in data.column_names \
                and pa.types.is_integer(data.column(C.ITEM_ID).type):
            _check_item_ids_unique(data, chk, n_items)
        problems = problems + chk.out
    return problems


def check_table(paths: DataPaths, table: C.Table, n_items: Optional[int]) -> tuple:
    """(problems, pyarrow table or None) of one file of a data root (contract columns only)."""
    return _read_checked(paths.table(table), table, n_items, table.relpath)


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _cover_problem(path: Path, decode: bool = False) -> Optional[str]:
    from .images import CoverError, check_cover, open_cover

    try:
        if decode:
            open_cover(path, COVER_DECODE_SIDE)
        else:
            check_cover(path)
    except CoverError as exc:  # "cover /long/path/7.jpg is ..." -> "7.jpg is ..."
        return str(exc).replace(f"cover {path}", path.name, 1)
    return None


def check_covers(image_dir, item_ids: Iterable[int], decode: bool = False,
                 workers: Optional[int] = None, progress=None) -> tuple:
    """Check every cover in parallel threads: its header, size guards and completeness
    (mmctr.images.check_cover), or with decode=True a full decode (open_cover; PIL releases
    the GIL while decoding).

    Returns (missing item ids, [(item id, why)] for covers present but unusable).
    """
    d = Path(image_dir)
    ids = np.fromiter(item_ids, dtype=np.int64)
    with os.scandir(d) as it:
        have = {e.name for e in it}
    present = np.array([C.image_name(i) in have for i in ids], dtype=bool)
    missing = ids[~present]
    todo = ids[present]
    workers = workers or min(8, 2 * usable_cores())  # 2x: reads wait on the disk too
    bad = []
    check = functools.partial(_cover_problem, decode=decode)
    with ThreadPoolExecutor(workers) as ex:
        # batches keep the number of pending futures small on 91,717 covers
        results = (why for start in range(0, len(todo), 4096)
                   for why in ex.map(check, [d / C.image_name(i) for i in todo[start:start + 4096]]))
        if progress is not None:
            results = progress(results, total=len(todo), desc="covers")
        for i, why in zip(todo, results):
            if why is not None:
                bad.append((int(i), why))
    return missing, bad


def _check_images(paths: DataPaths, n_items: int, item_ids: Iterable[int], decode: bool = False,
                  progress=None) -> list:
    chk = _Checker(C.IMAGES_DIR)
    d = paths.images_dir
    if not d.is_dir():
        rar = paths.root / C.IMAGES_RAR
        hint = f" ({rar} must be extracted)" if rar.exists() else ""
        chk.file_error(f"folder missing{hint}")
        return chk.out
    missing, bad = check_covers(d, item_ids, decode=decode, progress=progress)
    if len(missing):
        shown = ", ".join(C.image_name(i) for i in missing[:SHOW_ROWS])
        chk.out.append(Problem(C.IMAGES_DIR, None, (), int(len(missing)),
                               f"{len(missing)} of {n_items} cover images missing (first: {shown})"))
    if bad:
        shown = "; ".join(why for _, why in bad[:SHOW_ROWS])
        chk.out.append(Problem(C.IMAGES_DIR, None, (), len(bad),
                               f"{len(bad)} of {n_items} cover images unusable: {shown}"))
    return chk.out


def _n_items(paths: DataPaths) -> Optional[int]:
    """Items in item_info.parquet (rows minus padding); None when it has none or is unreadable."""
    info_path = paths.table(C.ITEM_INFO)
    if not info_path.is_file():
        return None
    try:
        rows = read_parquet_metadata(info_path).num_rows
    except KitError:
        return None
    return rows - 1 if rows > 1 else None


def validate(data_dir, images: bool = True, decode_covers: bool = False, progress=None) -> list:
    """Check every file of the layout; return the list of Problems (empty = valid). Read-only.

    images=False skips the covers; decode_covers=True decodes each one instead of checking its
    header, size and completeness.
    """
    paths = DataPaths.resolve(data_dir)
    out: list = []
    n_items = _n_items(paths)
    loaded = {}
    for table in C.ALL_TABLES:
        if not paths.table(table).is_file():
            if table not in C.OPTIONAL_TABLES:
                out.append(Problem(table.relpath, None, (), 0, "file missing"))
            continue
        problems, data = check_table(paths, table, n_items)
        out.extend(problems)
        if data is None:
            continue
        chk = _Checker(table.relpath)
        if table is C.ITEM_INFO:
            _check_item_info(data, chk)
            loaded[table.name] = data
        elif table is C.ITEM_FEATURE and C.ITEM_ID in data.column_names \
                and pa.types.is_integer(data.column(C.ITEM_ID).type):
            _check_item_ids_unique(data, chk, n_items)
            loaded[table.name] = data
        out.extend(chk.out)
    if n_items is not None and len(loaded) == 2:
        out.extend(_check_tags_agree(loaded[C.ITEM_INFO.name], loaded[C.ITEM_FEATURE.name], n_items))
    if images and n_items is not None:
        out.extend(_check_images(paths, n_items, range(1, n_items + 1), decode=decode_covers,
                                 progress=progress))
    return out

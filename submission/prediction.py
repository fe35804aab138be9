"""prediction.csv: validate it against test.parquet, and score a zip as the organisers do."""
from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.metrics import roc_auc
from mmctr.paths import DataPaths
from mmctr.tracks import get_track


def test_rows(data_dir) -> tuple:
    """(path of test.parquet, its row count) from the parquet footer only."""
    import pyarrow.parquet as pq

    path = DataPaths.resolve(data_dir).require(C.TEST)
    try:
        return path, pq.read_metadata(path).num_rows
    except Exception as exc:
        raise KitError(f"{path} cannot be read as parquet ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class PredictionSummary:
    path: str
    rows: int
    column: str
    min: float
    max: float
    mean: float


def _header(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as f:
        try:
            return next(csv.reader(f))
        except StopIteration:
            raise KitError(f"{path} is empty") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise KitError(f"{path}: cannot read the header ({exc})") from None


def _first(mask: np.ndarray) -> tuple:
    idx = np.flatnonzero(mask)
    return int(idx.size), int(idx[0]) if idx.size else -1


def validate_prediction(path, n_rows: int, track: str) -> PredictionSummary:
    """Raise KitError (one line) unless `path` is a valid prediction.csv for `track`.

    Checks: exactly the columns ID and the track's score column; n_rows rows; ID = 0..N-1
    in order; every score a finite number in [0, 1].
    """
    import pandas as pd

    path = Path(path)
    col = get_track(track).column
    if not path.is_file():
        raise KitError(f"{C.SUBMISSION_FILE} not found: {path}")
    header = _header(path)
    expected = [C.SUBMISSION_ID, col]
    if header != expected:
        others = {c: t for t, c in C.TRACK_COLUMNS.items()}
        wrong = [h for h in header if h in others and h != col]
        if wrong:
            raise KitError(f"{path}: score column '{wrong[0]}' is the {others[wrong[0]]} track's; "
                           f"track {get_track(track).name} needs columns {expected}, got {header}")
        raise KitError(f"{path}: columns must be exactly {expected}, got {header}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise KitError(f"{path}: cannot be read as CSV ({type(exc).__name__}: {exc})") from None
    if len(df) != n_rows:
        raise KitError(f"{path}: {len(df)} rows, but test.parquet has {n_rows} "
                       "(one row per test row is required)")
    ids = pd.to_numeric(df[C.SUBMISSION_ID].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    n_bad, first = _first(~np.isfinite(ids) | (ids != np.round(ids)))
    if n_bad:
        raise KitError(f"{path}: {C.SUBMISSION_ID} at row {first} is {df[C.SUBMISSION_ID].iloc[first]!r}, "
                       f"not an integer ({n_bad} such rows)")
    n_bad, first = _first(ids != np.arange(n_rows))
    if n_bad:
        raise KitError(f"{path}: {C.SUBMISSION_ID} at row {first} is {int(ids[first])}, expected {first} "
                       f"(IDs must be 0..{n_rows - 1} in test.parquet row order; {n_bad} rows differ)")
    raw = df[col].str.strip()
    scores = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    n_bad, first = _first(~np.isfinite(scores))
    if n_bad:
        raise KitError(f"{path}: {col} at row {first} is {raw.iloc[first]!r}, not a finite number "
                       f"({n_bad} such rows)")
    n_bad, first = _first((scores < 0) | (scores > 1))
    if n_bad:
        raise KitError(f"{path}: {col} at row {first} is {scores[first]:g}, outside [0, 1] "
                       f"({n_bad} such rows)")
    return PredictionSummary(str(path), n_rows, col, float(scores.min(initial=0.0)),
                             float(scores.max(initial=0.0)), float(scores.mean()) if n_rows else 0.0)


def score(zip_path, labels, track: str | None = None) -> float:
    """AUC of a submission zip as the organisers' scorer computes it.

    Reads prediction.csv from the zip's root, aligns rows by ID with `labels` (label of test
    row i at index i) and returns the AUC of the track's column. A missing file, a missing
    column or IDs that do not cover every label score 0. Without `track`, the one score
    column present is used.
    """
    import pandas as pd

    labels = np.asarray(labels, dtype=np.float64).ravel()
    with zipfile.ZipFile(zip_path) as zf:
        if C.SUBMISSION_FILE not in zf.namelist():
            return 0.0
        df = pd.read_csv(io.BytesIO(zf.read(C.SUBMISSION_FILE)))
    if track is not None:
        col = get_track(track).column
    else:
        present = [c for c in C.TRACK_COLUMNS.values() if c in df.columns]
        if len(present) != 1:
            return 0.0
        col = present[0]
    if col not in df.columns or C.SUBMISSION_ID not in df.columns or len(df) != len(labels):
        return 0.0
    ids = df[C.SUBMISSION_ID].to_numpy()
    if not np.array_equal(np.sort(ids), np.arange(len(labels))):
        return 0.0
    scores = np.empty(len(labels))
    scores[ids] = df[col].to_numpy(dtype=np.float64)
    if not np.isfinite(scores).all():
        return 0.0
    return roc_auc(labels, scores)

"""prediction.csv: validate it against test.parquet, and score a zip as the organisers do."""
from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.io import read_parquet_metadata
from mmctr.metrics import roc_auc
from mmctr.paths import DataPaths
from mmctr.tracks import get_track


def test_rows(data_dir) -> tuple:
    """(path of test.parquet, its row count) from the parquet footer only."""
    path = DataPaths.resolve(data_dir).require(C.TEST)
    return path, read_parquet_metadata(path, what="test").num_rows


@dataclass(frozen=True)
class PredictionSummary:
    path: str
    rows: int
    column: str
    min: float
    max: float
    mean: float


_ID = re.compile(r"0|[1-9][0-9]*")
_SCORE = re.compile(r"[-+]?(?:[0-9]*\.?[0-9]+|[0-9]+\.)(?:[eE][-+]?[0-9]+)?")
SCORE_FORMAT = "%.8f"  # the canonical file's probabilities (FuxiCTR-level precision, 10 bytes a row)


def parse_prediction(raw: bytes, n_rows: int, track, where: str = C.SUBMISSION_FILE) -> np.ndarray:
    """The scores of a prediction.csv, parsed strictly; KitError (one line) on anything else.

    Accepted: UTF-8 text, the exact header `ID,<track column>`, then n_rows lines `i,score` with
    i = 0..N-1 in order (plain integers), score a plain decimal number in [0, 1]; `\n` or `\r\n`
    line ends, one final line end allowed. Refused: extra fields, blank lines, quotes, spaces,
    `0.0` IDs, nan/inf, a byte-order mark.
    """
    col = get_track(track).column
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KitError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not lines:
        raise KitError(f"{where} is empty")
    expected = f"{C.SUBMISSION_ID},{col}"
    if lines[0] != expected:
        others = {c: t for t, c in C.TRACK_COLUMNS.items()}
        wrong = [h for h in lines[0].split(",") if h in others and h != col]
        if wrong:
            raise KitError(f"{where}: score column '{wrong[0]}' is the {others[wrong[0]]} track's; "
                           f"track {get_track(track).name} needs the header {expected!r}, got {lines[0]!r}")
        raise KitError(f"{where}: the header must be exactly {expected!r}, got {lines[0]!r}")
    body = lines[1:]
    if "" in body:
        i = body.index("")
        raise KitError(f"{where}: row {i} (line {i + 2}) is a blank line; blank lines are not allowed")
    if len(body) != n_rows:
        raise KitError(f"{where}: {len(body)} rows, but test.parquet has {n_rows} "
                       "(one row per test row is required)")
    scores = np.empty(n_rows, np.float64)
    for i, line in enumerate(body):
        fields = line.split(",")
        if len(fields) != 2:
            raise KitError(f"{where}: row {i} (line {i + 2}) has {len(fields)} fields, expected 2 "
                           f"('ID,score'): {line[:60]!r}")
        sid, sval = fields
        if '"' in line or "'" in line:
            raise KitError(f"{where}: row {i} holds quoted values ({line[:60]!r}); write plain numbers")
        if not _ID.fullmatch(sid):
            raise KitError(f"{where}: {C.SUBMISSION_ID} at row {i} is {sid!r}, not a plain integer")
        if int(sid) != i:
            raise KitError(f"{where}: {C.SUBMISSION_ID} at row {i} is {sid}, expected {i} "
                           f"(IDs must be 0..{n_rows - 1} in test.parquet row order)")
        if not _SCORE.fullmatch(sval):
            raise KitError(f"{where}: {col} at row {i} is {sval!r}, not a finite number written plainly")
        v = float(sval)
        if not (0.0 <= v <= 1.0):
            raise KitError(f"{where}: {col} at row {i} is {sval}, outside [0, 1]")
        scores[i] = v
    return scores


def canonical_csv(scores: np.ndarray, track) -> bytes:
    """The bytes pack ships: header `ID,<column>`, IDs 0..N-1, scores as SCORE_FORMAT, `\n` ends."""
    buf = io.StringIO()
    buf.write(f"{C.SUBMISSION_ID},{get_track(track).column}\n")
    ids = np.arange(len(scores))
    np.savetxt(buf, np.column_stack([ids, scores]), fmt=["%d", SCORE_FORMAT], delimiter=",", newline="\n")
    return buf.getvalue().encode()


def summarize(path, scores: np.ndarray, track) -> PredictionSummary:
    n = len(scores)
    return PredictionSummary(str(path), n, get_track(track).column, float(scores.min(initial=0.0)),
                             float(scores.max(initial=0.0)), float(scores.mean()) if n else 0.0)


def validate_prediction(path, n_rows: int, track) -> PredictionSummary:
    """Raise KitError (one line) unless `path` is a valid prediction.csv for `track`."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{C.SUBMISSION_FILE} not found: {path}")
    return summarize(path, parse_prediction(path.read_bytes(), n_rows, track, str(path)), track)


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
        if zf.getinfo(C.SUBMISSION_FILE).flag_bits & 0x1:
            raise KitError(f"{zip_path}: {C.SUBMISSION_FILE} is encrypted: the scorer cannot read it")
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

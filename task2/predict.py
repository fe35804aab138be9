"""Predict test.parquet with a trained run's best checkpoint → prediction.csv (ID, track column)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from mmctr import contract as C
from mmctr import ledger
from mmctr import manifest as M
from mmctr.config import build
from mmctr.errors import KitError
from mmctr.io import atomic_path, check_writable, file_sha256, write_json
from mmctr.manifest import read_manifest
from mmctr.paths import DataPaths, refuse_data_write
from mmctr.tracks import get_track

from .checkpoint import load_checkpoint, model_from_state
from .config import RuntimeConfig
from .data import ItemTable, load_split
from .train import (BEST, HISTORY, LAST, LOG, MANIFEST, predict_split, relative_to, resolve_device,
                    resolve_located)

CHECKPOINTS_LOADED = "checkpoints_loaded"
SIDE_PREDICTIONS = "side_predictions"


def write_prediction(path, probs: np.ndarray, column: str) -> None:
    """prediction.csv: ID = test row order 0..N-1, one probability per row; written atomically."""
    probs = np.asarray(probs, dtype=np.float64)
    if not np.all(np.isfinite(probs)) or probs.min(initial=0) < 0 or probs.max(initial=0) > 1:
        raise KitError("predictions must be finite probabilities in [0, 1]")
    ids = np.arange(len(probs))
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(f"{C.SUBMISSION_ID},{column}\n")
            np.savetxt(f, np.column_stack([ids, probs]), fmt=["%d", "%.8f"], delimiter=",")


def predict_run(run_dir, data_dir, track: str, out=None, device: str | None = None,
                batch_size: int | None = None) -> dict:
    """Score every test row with the run's best checkpoint; record it in the run manifest.

    The default output (RUN/prediction.csv) is the run's prediction; any other --out is a side
    prediction, listed under `side_predictions`, leaving `prediction` alone.
    """
    t0, since = time.perf_counter(), ledger.mark()
    run = Path(run_dir)
    manifest = read_manifest(run / MANIFEST)
    column, track_name = get_track(track).column, get_track(track).name
    paths = DataPaths.resolve(data_dir)
    default_out = run / C.SUBMISSION_FILE
    out = Path(out) if out else default_out
    refuse_data_write(out, paths.root, "--out")
    if out.resolve() in {(run / name).resolve() for name in (BEST, LAST, MANIFEST, HISTORY, LOG)}:
        raise KitError(f"--out {out} would overwrite the run's own {out.name}; write the prediction elsewhere")
    check_writable(out, "--out")
    main = out.resolve() == default_out.resolve()
    ck = manifest.get(M.CHECKPOINT) or {}
    if not ck.get(M.SHA256):
        raise KitError(f"{run / MANIFEST} records no best checkpoint: train first "
                       f"(`python -m task2 train --out {run}`)")
    ck_path = run / BEST
    runtime = build(RuntimeConfig, {**manifest.get(M.RUNTIME, {}), **({"device": device} if device else {})},
                    str(run / MANIFEST))
    dev = resolve_device(runtime.device)

    info = manifest[M.ITEM_INFO]
    items = ItemTable.load(resolve_located(info, paths.root, run))
    if file_sha256(items.path) != info[M.SHA256]:
        raise KitError(f"{items.path} changed since training (sha256 differs from {run / MANIFEST})")
    state = load_checkpoint(ck_path, sha256=ck[M.SHA256], map_location="cpu")
    model = model_from_state(state, items, ck_path).to(dev)
    test_path = paths.require(C.TEST)
    test = load_split(test_path, state["model_args"]["max_len"], items.n_items, need_label=False)
    if dev.type == "cuda":
        test = test.to(dev)
    probs = predict_split(model, test, batch_size or runtime.eval_batch_size, dev, runtime.amp)
    write_prediction(out, probs, column)

    loaded = [{M.PATH: BEST, M.SHA256: ck[M.SHA256]}]
    rel_out = relative_to(out, run)
    entry = {
        M.PATH: rel_out if rel_out is not None else os.path.relpath(out.resolve(), run.resolve()),
        M.SHA256: file_sha256(out), "rows": int(len(probs)), "column": column, "track": track_name,
        "test_path": relative_to(test_path, paths.root), "test_sha256": file_sha256(test_path),
        "checkpoint_epoch": state.get("epoch"), CHECKPOINTS_LOADED: loaded, M.CHECKPOINTS_USED: len(loaded),
        "seconds": round(time.perf_counter() - t0, 3), M.LEDGER: ledger.snapshot(since)}
    if main:
        manifest[M.PREDICTION] = entry
    else:
        manifest[SIDE_PREDICTIONS] = [*manifest.get(SIDE_PREDICTIONS, []), entry]
    write_json(run / MANIFEST, manifest)
    return entry

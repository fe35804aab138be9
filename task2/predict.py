"""Predict test.parquet with a trained run's best checkpoint → prediction.csv (ID, track column)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from mmctr import contract as C
from mmctr import ledger
from mmctr import rundir as R
from mmctr.config import build
from mmctr.errors import KitError
from mmctr.io import atomic_path, check_writable, file_sha256, write_json
from mmctr.paths import DataPaths, is_inside, refuse_data_write
from mmctr.runtime import autocast, resolve_device
from mmctr.tracks import get_track

from .checkpoint import model_from_state
from .config import RuntimeConfig
from .data import ItemTable, Split, iter_batches, load_split


@torch.no_grad()
def predict_split(model: torch.nn.Module, split: Split, batch_size: int, device: torch.device,
                  amp: bool) -> np.ndarray:
    """Click probabilities for every row of `split`, in row order."""
    model.eval()
    out = []
    for idx in iter_batches(len(split), batch_size, shuffle=False):
        batch = {k: v.to(device, non_blocking=True) for k, v in split.batch(idx).items() if k != "label"}
        with autocast(device, amp):
            out.append(torch.sigmoid(model(batch).float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


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
    run = R.RunDir(run_dir)
    manifest = run.read_manifest()
    column, track_name = get_track(track).column, get_track(track).name
    paths = DataPaths.resolve(data_dir)
    out = Path(out) if out else run.prediction
    refuse_data_write(out, paths.root, "--out")
    if out.resolve() in {p.resolve() for p in run.own_files}:
        raise KitError(f"--out {out} would overwrite the run's own {out.name}; write the prediction elsewhere")
    check_writable(out, "--out")
    main = out.resolve() == run.prediction.resolve()
    ck = manifest.get(R.CHECKPOINT) or {}
    if not ck.get(R.SHA256):
        raise KitError(f"{run.manifest} records no best checkpoint: train first "
                       f"(`python -m task2 train --out {run.path}`)")
    runtime = build(RuntimeConfig, {**manifest.get(R.RUNTIME, {}), **({"device": device} if device else {})},
                    str(run.manifest))
    dev = resolve_device(runtime.device)

    info = manifest[R.ITEM_INFO]
    items = ItemTable.load(R.resolve_located(info, paths.root, run.path))
    if file_sha256(items.path) != info[R.SHA256]:
        raise KitError(f"{items.path} changed since training (sha256 differs from {run.manifest})")
    state = run.load_checkpoint(R.BEST, pinned=ck[R.SHA256])
    model = model_from_state(state, items, run.best).to(dev)
    test_path = paths.require(C.TEST)
    test = load_split(test_path, state["model_args"]["max_len"], items.n_items, need_label=False)
    if dev.type == "cuda":
        test = test.to(dev)
    probs = predict_split(model, test, batch_size or runtime.eval_batch_size, dev, runtime.amp)
    write_prediction(out, probs, column)

    loaded = [{R.PATH: R.BEST, R.SHA256: ck[R.SHA256]}]
    test_rel = is_inside(test_path.resolve(), (paths.root,))
    entry = {
        R.PATH: os.path.relpath(out.resolve(), run.path.resolve()),
        R.SHA256: file_sha256(out), "rows": int(len(probs)), "column": column, "track": track_name,
        "test_path": None if test_rel is None else str(test_rel), "test_sha256": file_sha256(test_path),
        "checkpoint_epoch": state.get("epoch"), R.CHECKPOINTS_LOADED: loaded, R.CHECKPOINTS_USED: len(loaded),
        "seconds": round(time.perf_counter() - t0, 3), R.LEDGER: ledger.snapshot(since)}
    if main:
        manifest[R.PREDICTION] = entry
    else:
        manifest[R.SIDE_PREDICTIONS] = [*manifest.get(R.SIDE_PREDICTIONS, []), entry]
    write_json(run.manifest, manifest)
    return entry

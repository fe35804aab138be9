"""Predict test.parquet with a trained run's best checkpoint → prediction.csv (ID, track column)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.io import atomic_path, file_sha256, write_json
from mmctr import manifest as M
from mmctr.manifest import read_manifest
from mmctr.paths import DataPaths
from mmctr.tracks import get_track

from .config import split_keys
from .data import ItemTable, load_split
from .models import create_model, model_config_class
from .train import BEST, MANIFEST, predict_split, resolve_device


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
    """Score every test row with the run's best checkpoint; update the run manifest."""
    t0 = time.perf_counter()
    run = Path(run_dir)
    manifest = read_manifest(run / MANIFEST)
    if not (run / BEST).is_file():
        raise KitError(f"{run / BEST} missing: train first (`python -m task2 train --out {run}`)")
    column = get_track(track).column
    paths = DataPaths.resolve(data_dir)
    flat = {**manifest[M.CONFIG], **manifest.get(M.RUNTIME, {})}
    flat.pop(M.CONFIG_SOURCE, None)
    cfg = split_keys(flat, model_config_class(flat.get("model")), str(run / MANIFEST))
    dev = resolve_device(device or cfg["device"])
    items = ItemTable.load(manifest[M.ITEM_INFO][M.PATH])
    if file_sha256(items.path) != manifest[M.ITEM_INFO][M.SHA256]:
        raise KitError(f"{items.path} changed since training (sha256 differs from {run / MANIFEST})")
    test_path = paths.require(C.TEST)
    test = load_split(test_path, cfg["max_len"], items.n_items, need_label=False)
    if dev.type == "cuda":
        test = test.to(dev)
    model = create_model(cfg, items.tags.to(dev), items.emb.to(dev)).to(dev)
    state = torch.load(run / BEST, map_location=dev, weights_only=False)
    model.load_state_dict(state["model"])
    probs = predict_split(model, test, batch_size or cfg["eval_batch_size"], dev, cfg["amp"])
    out = Path(out) if out else run / C.SUBMISSION_FILE
    write_prediction(out, probs, column)
    manifest[M.PREDICTION] = {
        M.PATH: str(out.resolve()), M.SHA256: file_sha256(out), "rows": int(len(probs)), "column": column,
        "track": get_track(track).name, "test_path": str(test_path.resolve()), "test_sha256": file_sha256(test_path),
        "checkpoint_epoch": state["epoch"], M.CHECKPOINTS_USED: 1, "seconds": round(time.perf_counter() - t0, 3)}
    write_json(run / MANIFEST, manifest)
    return manifest[M.PREDICTION]

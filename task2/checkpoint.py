"""Checkpoints hold tensors and plain data only; loading never unpickles code.

Every load can be pinned to the sha256 a manifest recorded, so a swapped or edited file is
refused before a byte of it is deserialised.
"""
from __future__ import annotations

from pathlib import Path

import torch

from mmctr.errors import KitError
from mmctr.io import atomic_path, file_sha256


def save_checkpoint(path, state: dict) -> str:
    """Write `state` (tensors, numbers, strings, lists, dicts) atomically; return its sha256."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return file_sha256(path)


def load_checkpoint(path, sha256: str | None = None, map_location="cpu") -> dict:
    """Load a checkpoint with weights_only=True, after checking its sha256 when one is given."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"checkpoint not found: {path}")
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256:
            raise KitError(f"{path}: sha256 {actual[:12]}... differs from the manifest's "
                           f"{sha256[:12]}...: the checkpoint changed after training; refusing to load it")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal or corruption is the user's file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KitError(f"{path} is not a plain-data checkpoint (tensors and plain values only): {reason}") from None
    if not isinstance(state, dict):
        raise KitError(f"{path}: a checkpoint must hold a dict, got {type(state).__name__}")
    return state


def load_weights(model: torch.nn.Module, weights, what: str) -> None:
    """model.load_state_dict(weights), or one KitError naming the first tensor that does not fit."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise KitError(f"{what}: {lines[1] if len(lines) > 1 else (lines or [type(exc).__name__])[0]}") from None


def model_from_state(state: dict, items, what) -> torch.nn.Module:
    """The model a loaded checkpoint describes (its model_args) over `items` (an ItemTable), with
    its weights; derived state (k-means codes, principal axes) comes from the state_dict."""
    from .models import create_model

    if "model_args" not in state or "model" not in state:
        raise KitError(f"{what} lacks model_args/model: not a checkpoint of this kit's task2 train")
    model = create_model(state["model_args"], items.tags, items.emb, derive=False)
    load_weights(model, state["model"], f"{what} does not fit its own model_args")
    return model

"""A model from a loaded checkpoint (saving and sha256-pinned loading: mmctr.rundir)."""
from __future__ import annotations

import torch

from mmctr.errors import KitError


def load_weights(model: torch.nn.Module, weights, what: str) -> None:
    """model.load_state_dict(weights), or one KitError naming the first tensor that does not fit."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise KitError(f"{what}: {lines[1] if len(lines) > 1 else (lines or [type(exc).__name__])[0]}") from None


def model_from_state(state: dict, items, what) -> torch.nn.Module:
    """The model a loaded checkpoint describes (its model_args) over `items` (an ItemTable), with
    its weights; derived state (k-means codes) comes from the state_dict."""
    from .models import create_model

    if "model_args" not in state or "model" not in state:
        raise KitError(f"{what} lacks model_args/model: not a checkpoint of this kit's task2 train")
    model = create_model(state["model_args"], items.tags, items.emb, derive=False)
    load_weights(model, state["model"], f"{what} does not fit its own model_args")
    return model

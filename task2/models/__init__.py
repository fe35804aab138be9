"""Model factory: models are chosen by name in a config (`model: din | transformer_dcn`)."""
from __future__ import annotations

import torch

from mmctr.errors import KitError

from . import din, transformer_dcn

MODELS = {
    "din": (din.DIN, din.DEFAULTS),
    "transformer_dcn": (transformer_dcn.TransformerDCN, transformer_dcn.DEFAULTS),
}


def model_defaults(name: str) -> dict:
    if name not in MODELS:
        raise KitError(f"unknown model '{name}': choose one of {', '.join(MODELS)}")
    return dict(MODELS[name][1])


def create_model(cfg: dict, tags: torch.Tensor, mm_emb: torch.Tensor) -> torch.nn.Module:
    """Build the model named by cfg['model'] over the item table (tags, frozen 128-D embeddings)."""
    model_defaults(cfg["model"])  # a clear error for an unknown name
    cls = MODELS[cfg["model"]][0]
    try:
        return cls(cfg, tags, mm_emb)
    except (ValueError, TypeError, KeyError) as exc:
        raise KitError(f"cannot build model '{cfg['model']}': {exc}") from None

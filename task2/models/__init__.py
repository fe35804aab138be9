"""Model factory: models are chosen by name in a config (`model: din | transformer_dcn`).

A model is built from typed fields (its config section) plus the item table; `model_args` is
the plain dict a checkpoint carries so that the model rebuilds from the checkpoint alone.
"""
from __future__ import annotations

import torch

from mmctr.config import build
from mmctr.errors import KitError

from ..config import TrainConfig
from . import din, transformer_dcn

MODELS = {
    "din": (din.DIN, din.DINConfig),
    "transformer_dcn": (transformer_dcn.TransformerDCN, transformer_dcn.TransformerDCNConfig),
}


def model_config_class(name: str):
    if name not in MODELS:
        raise KitError(f"unknown model '{name}': choose one of {', '.join(MODELS)}")
    return MODELS[name][1]


def model_name_of(config_cls) -> str:
    return next(name for name, (_, c) in MODELS.items() if c is config_cls)


def model_defaults(name: str) -> dict:
    """The model's own keys with their default values."""
    return model_config_class(name)().model_dump()


def model_args(cfg, tags: torch.Tensor) -> dict:
    """Plain data that rebuilds the model of `cfg` (a RunConfig) over an item table."""
    return {"model": cfg.model, "config": cfg.net.model_dump(), "max_len": cfg.train.max_len,
            "seed": cfg.train.seed, "n_items": len(tags) - 1, "n_tags": int(tags.max()) + 1}


def create_model(spec, tags: torch.Tensor, mm_emb: torch.Tensor, derive: bool = True) -> torch.nn.Module:
    """Build a model over the item table (tags, frozen 128-D embeddings).

    `spec` is a RunConfig or a checkpoint's `model_args`. derive=False skips derived state
    (the k-means codes): a checkpoint's state_dict brings it.
    """
    args = spec if isinstance(spec, dict) else model_args(spec, tags)
    missing = [k for k in ("model", "config", "max_len", "seed", "n_items", "n_tags") if k not in args]
    if missing:
        raise KitError(f"checkpoint model_args lack {missing}: not a checkpoint of this kit")
    config_cls = model_config_class(args["model"])
    cls = MODELS[args["model"]][0]
    net = build(config_cls, args["config"], "checkpoint model_args")
    build(TrainConfig, {"max_len": args["max_len"], "seed": args["seed"]}, "checkpoint model_args")
    if len(tags) - 1 != args["n_items"] or int(tags.max()) + 1 != args["n_tags"]:
        raise KitError(f"item_info has {len(tags) - 1} items and tag ids up to {int(tags.max())}; the model was "
                       f"built for {args['n_items']} items and {args['n_tags']} tag ids")
    extra = {"max_len": args["max_len"]} if cls is transformer_dcn.TransformerDCN else {}
    try:
        return cls(net, tags, mm_emb, seed=args["seed"], n_tags=args["n_tags"], derive=derive, **extra)
    except (ValueError, TypeError, KeyError) as exc:
        raise KitError(f"cannot build model '{args['model']}': {exc}") from None

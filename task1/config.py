"""task1 configs: a YAML file of nested sections over DEFAULTS, plus `--set a.b=value` overrides.

A config is a plain nested dict. Every key must exist in DEFAULTS: a typo is a KitError naming
the key, never a silently ignored setting.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from mmctr import yamlconfig
from mmctr.errors import KitError

CONFIG_DIR = Path(__file__).parent / "configs"

DEFAULTS = {
    "text": {
        "enabled": True,
        "model": "all-MiniLM-L6-v2",  # a known name, a local sentence-transformers dir, or a HF id in the local cache
        "batch_size": 256,
        "max_length": 64,  # tokens; titles are short
        "prefix": "",  # e.g. "query: " for multilingual-e5
    },
    "image": {
        "enabled": True,
        "model": "efficientnet-lite0",  # or an open_clip architecture, e.g. ViT-L-14 (needs checkpoint)
        "checkpoint": None,  # local open_clip checkpoint file (or a HF hub id already in the local cache)
        "image_size": None,  # None = the model's own input size
        "batch_size": 64,
        "workers": 2,  # DataLoader decode workers
        "precision": "auto",  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
    },
    "tags": {
        "enabled": True,
        "dim": 64,  # TF-IDF bag of tags, truncated SVD to this size
    },
    "behaviour": {
        "enabled": True,
        "dim": 64,  # PPMI co-occurrence, truncated SVD to this size
        "window": 5,  # items at most this far apart in a sequence co-occur (weight 1/distance)
        "item_seq": True,  # use item_seq.parquet
        "train_sequences": True,  # use train.parquet item_seq + the target of positive clicks
        "min_count": 1,  # items seen fewer times are cold (no behaviour vector)
        "neg_shift": 1.0,  # PMI shift: PPMI = max(PMI - log(neg_shift), 0)
    },
    "fusion": {
        "method": "contrastive",  # pca | contrastive
        "weights": {"text": 1.0, "image": 1.0, "tags": 1.0, "behaviour": 1.0},
        "steps": 400,  # contrastive: optimiser steps (batches of warm items)
        "batch_size": 1024,
        "lr": 2.0e-3,
        "hidden": 256,
        "content_dim": 256,  # contrastive: content parts are first reduced to this many principal components
        "temperature": 0.1,
        "behaviour_mix": 1.0,  # contrastive: weight of the item's own projected behaviour vector
        "holdout": 0.05,  # contrastive: share of warm items held out to measure content->behaviour recall
        # Rows are L2-normalised, then scaled to this norm: sqrt(128) = unit variance per dimension.
        # The fixed DIN feeds item_emb_d128 raw into a Linear layer; unit-norm rows (per-dim std
        # ~0.09) learned measurably slower there (valid AUC 0.640 vs 0.698 on the demo sample).
        "output_norm": 11.313708498984761,
    },
    "runtime": {
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "num_threads": 2,  # torch CPU threads; 0 = torch's default
        "seed": 20242025,
    },
}

PARTS = ("text", "image", "tags", "behaviour")
FUSION_METHODS = ("pca", "contrastive")


def _merge(base: dict, over: dict, where: str) -> dict:
    for key, value in over.items():
        path = f"{where}.{key}" if where else key
        if key not in base:
            known = ", ".join(sorted(base))
            raise KitError(f"unknown config key '{path}' (known at this level: {known})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise KitError(f"config key '{path}' is a section; give a mapping, got {value!r}")
            _merge(base[key], value, path)
        else:
            base[key] = value
    return base


def parse_sets(items) -> dict:
    """['fusion.method=pca', 'image.batch_size=32'] -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items or ():
        if "=" not in item:
            raise KitError(f"--set '{item}' is not KEY=VALUE (e.g. fusion.method=pca)")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise KitError(f"--set {key}: value is not valid YAML: {exc}") from None
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def config_path(name_or_path) -> Path:
    return yamlconfig.config_path(name_or_path, CONFIG_DIR)


def load_config(name_or_path=None, overrides: dict | None = None) -> dict:
    """DEFAULTS <- YAML file (a path or a name in task1/configs) <- overrides; then checked."""
    cfg = copy.deepcopy(DEFAULTS)
    source = None
    if name_or_path is not None:
        path = config_path(name_or_path)
        raw = yamlconfig.read_mapping(path)
        try:
            _merge(cfg, raw, "")
        except KitError as exc:
            raise KitError(f"{path}: {exc}") from None
        source = str(path)
    _merge(cfg, overrides or {}, "")
    check(cfg)
    cfg["config_source"] = source
    return cfg


def check(cfg: dict) -> None:
    if cfg["fusion"]["method"] not in FUSION_METHODS:
        raise KitError(f"fusion.method '{cfg['fusion']['method']}' unknown: choose one of "
                       f"{', '.join(FUSION_METHODS)}")
    if not any(cfg[p]["enabled"] for p in PARTS):
        raise KitError("every part is disabled: enable at least one of " + ", ".join(PARTS))
    if cfg["fusion"]["method"] == "contrastive":
        if not cfg["behaviour"]["enabled"]:
            raise KitError("fusion.method=contrastive aligns content to behaviour: "
                           "set behaviour.enabled=true or use fusion.method=pca")
        if not any(cfg[p]["enabled"] for p in ("text", "image", "tags")):
            raise KitError("fusion.method=contrastive needs a content part (text, image or tags)")
    for sec, key in (("text", "batch_size"), ("image", "batch_size"), ("tags", "dim"),
                     ("behaviour", "dim"), ("behaviour", "window"), ("fusion", "steps"),
                     ("fusion", "batch_size"), ("fusion", "hidden"), ("fusion", "content_dim")):
        v = cfg[sec][key]
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise KitError(f"{sec}.{key} must be a positive integer, got {v!r}")
    if cfg["image"]["workers"] < 0:
        raise KitError(f"image.workers must be >= 0, got {cfg['image']['workers']}")
    if cfg["image"]["precision"] not in ("auto", "fp32", "fp16", "bf16"):
        raise KitError(f"image.precision must be auto, fp32, fp16 or bf16, got {cfg['image']['precision']!r}")
    unknown = set(cfg["fusion"]["weights"]) - set(PARTS)
    if unknown:
        raise KitError(f"fusion.weights: unknown part(s) {sorted(unknown)}; parts are {', '.join(PARTS)}")

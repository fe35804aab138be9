"""Experiment configs: a named YAML (task2/configs/NAME.yaml) or a path, plus overrides.

A config is one flat dict. Keys are of three kinds: training keys (below), the chosen
model's keys (its DEFAULTS), and runtime keys that change speed or budget, never the model.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from mmctr import yamlconfig
from mmctr.errors import KitError
from mmctr.manifest import CONFIG_SOURCE

CONFIG_DIR = Path(__file__).parent / "configs"

TRAIN_DEFAULTS = {
    "model": None,
    "learning_rate": 1e-3,
    "batch_size": 4096,
    "embedding_regularizer": 0.0,
    "net_regularizer": 0.0,
    "max_len": 64,
    "early_stop_patience": 3,
    "lr_decay_factor": 0.1,
    "grad_clip_norm": 10.0,
    "seed": 20242025,
}

# Runtime keys: how fast and how long, not what is learned (submission's rule check ignores them).
RUNTIME_DEFAULTS = {
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "amp": True,  # bf16 autocast on CUDA
    "compile": False,  # torch.compile the model
    "max_epochs": 100,
    "eval_batch_size": 16384,
    "num_threads": 0,  # CPU threads for torch; 0 = torch's default
    "log_every": 0,  # steps between loss logs; 0 = once per epoch
}
RUNTIME_KEYS = tuple(RUNTIME_DEFAULTS)


def _parse_value(text: str):
    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
        try:
            return float(value)
        except ValueError:
            pass
    return value


def parse_overrides(items) -> dict:
    """['lr=1e-3', 'dnn_hidden_units=[256,128]'] -> dict (values parsed as YAML)."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise KitError(f"override '{item}' is not KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = _parse_value(value)
    return out


def config_path(name_or_path) -> Path:
    return yamlconfig.config_path(name_or_path, CONFIG_DIR)


def load_config(name_or_path, overrides: dict | None = None) -> dict:
    """Load and complete a config; unknown keys or a bad model name raise KitError."""
    from .models import model_defaults

    path = config_path(name_or_path)
    raw = yamlconfig.read_mapping(path)
    raw.update(overrides or {})
    if not raw.get("model"):
        raise KitError(f"{path}: no 'model' key")
    defaults = {**TRAIN_DEFAULTS, **model_defaults(raw["model"]), **RUNTIME_DEFAULTS}
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        raise KitError(f"{path}: unknown key(s) {unknown} for model '{raw['model']}'; "
                       f"known: {', '.join(sorted(defaults))}")
    cfg = {**defaults, **raw}
    for key in ("batch_size", "max_len", "max_epochs"):
        if not isinstance(cfg[key], int) or cfg[key] <= 0:
            raise KitError(f"{path}: '{key}' must be a positive integer, got {cfg[key]!r}")
    for key in ("learning_rate", "embedding_regularizer", "net_regularizer", "lr_decay_factor", "grad_clip_norm"):
        value = cfg[key]
        if isinstance(value, str):  # "1e-5" in a YAML file
            try:
                cfg[key] = value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise KitError(f"{path}: '{key}' must be a non-negative number, got {value!r}")
    if cfg["learning_rate"] <= 0:
        raise KitError(f"{path}: 'learning_rate' must be positive, got {cfg['learning_rate']!r}")
    cfg[CONFIG_SOURCE] = str(path)
    return cfg


def model_config(cfg: dict) -> dict:
    """The part of a config that defines what is learned (drops runtime keys)."""
    return {k: v for k, v in cfg.items() if k not in RUNTIME_KEYS and k != CONFIG_SOURCE}

"""Experiment configs: a named YAML (task2/configs/NAME.yaml) or a path, plus `--set` overrides.

A YAML file stays one flat mapping (the submission rule check reads its keys). Loading splits it
into typed sections: `TrainConfig` (how the model is fitted), the chosen model's own config
(`DINConfig`, `TransformerDCNConfig`: what is learned) and `RuntimeConfig` (speed and budget,
never the model). Every key has a type and a range; a bad value is one KitError at load time.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints

from mmctr import yamlconfig
from mmctr.config import Section, build, parse_sets, read_yaml
from mmctr.errors import KitError
from mmctr.manifest import CONFIG_SOURCE

CONFIG_DIR = Path(__file__).parent / "configs"
MAX_LEARNING_RATE = 10.0  # above this Adam only diverges; a typo such as 1e8 is caught at load time

Device = Annotated[str, StringConstraints(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")]


class TrainConfig(Section):
    """How the model is fitted (recorded in the manifest's `config`)."""

    learning_rate: float = Field(1e-3, gt=0, le=MAX_LEARNING_RATE)
    batch_size: int = Field(4096, ge=1, le=1 << 20)
    embedding_regularizer: float = Field(0.0, ge=0, le=1)
    net_regularizer: float = Field(0.0, ge=0, le=1)
    max_len: int = Field(64, ge=1, le=4096)
    early_stop_patience: int = Field(3, ge=1, le=1000)
    lr_decay_factor: float = Field(0.1, gt=0, le=1)  # lr x factor after a validation without gain
    # validations per epoch (FuxiCTR's eval_steps, as a count); early_stop_patience and the lr
    # decay count validations, so early stop can act inside the epoch where overfitting starts
    evals_per_epoch: int = Field(1, ge=1, le=1000)
    grad_clip_norm: float = Field(10.0, ge=0)  # 0 = no clipping
    seed: int = Field(20242025, ge=0, le=2**63 - 1)


class RuntimeConfig(Section):
    """How fast and how long, not what is learned (the rule check ignores these keys)."""

    device: Device = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: bool = True  # bf16 autocast on CUDA
    compile: bool = False  # torch.compile the model
    max_epochs: int = Field(100, ge=1, le=10_000)
    eval_batch_size: int = Field(16384, ge=1, le=1 << 22)
    num_threads: int = Field(0, ge=0, le=1024)  # CPU threads for torch; 0 = torch's default
    log_every: int = Field(0, ge=0)  # steps between loss logs; 0 = once per epoch


TRAIN_DEFAULTS = {"model": None, **TrainConfig().model_dump()}
RUNTIME_DEFAULTS = RuntimeConfig().model_dump()
RUNTIME_KEYS = tuple(RuntimeConfig.model_fields)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One loaded config: the model's name and its three typed sections."""

    model: str
    net: Section  # the model's own config (DINConfig, TransformerDCNConfig)
    train: TrainConfig
    runtime: RuntimeConfig
    source: str = ""

    def to_flat(self) -> dict:
        """The flat mapping a YAML file holds (model, training and runtime keys)."""
        return {"model": self.model, **self.net.model_dump(), **self.train.model_dump(),
                **self.runtime.model_dump()}

    def learned(self) -> dict:
        """Model + training keys: what the manifest's `config` records."""
        return {"model": self.model, **self.net.model_dump(), **self.train.model_dump()}

    def replace(self, section: str, **changes) -> "RunConfig":
        """A copy with some keys of one section changed (validated)."""
        current = getattr(self, section)
        new = build(type(current), {**current.model_dump(), **changes}, self.source)
        return dataclasses.replace(self, **{section: new})

    def __getitem__(self, key: str):  # flat read access, e.g. cfg["batch_size"]
        flat = self.to_flat()
        if key not in flat:
            raise KeyError(key)
        return flat[key]


def parse_overrides(items) -> dict:
    """['learning_rate=1e-3', 'dnn_hidden_units=[256,128]'] -> flat dict of YAML values."""
    return parse_sets(items)


def config_path(name_or_path) -> Path:
    return yamlconfig.config_path(name_or_path, CONFIG_DIR)


def split_keys(raw: dict, model_cls, source: str) -> RunConfig:
    """Split one flat mapping into typed sections; unknown keys are named with the known ones."""
    from .models import model_name_of

    name = raw.get("model")
    sections = {"net": model_cls, "train": TrainConfig, "runtime": RuntimeConfig}
    known = {"model"} | {k for cls in sections.values() for k in cls.model_fields}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise KitError(f"{source}: unknown key(s) {unknown} for model '{name}'; known: {', '.join(sorted(known))}")
    parts = {sec: build(cls, {k: v for k, v in raw.items() if k in cls.model_fields}, source)
             for sec, cls in sections.items()}
    assert model_name_of(model_cls) == name
    return RunConfig(model=name, source=source, **parts)


def load_config(name_or_path, overrides: dict | None = None) -> RunConfig:
    """Load, override and validate a config; any bad key or value is one KitError."""
    from .models import model_config_class

    path = config_path(name_or_path)
    raw = {**read_yaml(path), **(overrides or {})}
    raw.pop(CONFIG_SOURCE, None)
    if not raw.get("model"):
        raise KitError(f"{path}: no 'model' key")
    if not isinstance(raw["model"], str):
        raise KitError(f"{path}: 'model' must be a model name, got {raw['model']!r}")
    return split_keys(raw, model_config_class(raw["model"]), str(path))


def model_config(cfg) -> dict:
    """The part of a config that defines what is learned (model + training keys, flat)."""
    if isinstance(cfg, RunConfig):
        return cfg.learned()
    return {k: v for k, v in cfg.items() if k not in RUNTIME_KEYS and k != CONFIG_SOURCE}

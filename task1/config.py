"""task1 configs: typed sections (pydantic, on mmctr.config) over defaults, a YAML file, `--set`.

One model per part, as open_clip's CLIPVisionCfg: every key has a type and a range, unknown keys
are refused, bools are never ints and YAML number forms (`5e-2`) are numbers. A bad value is one
KitError naming the key, the value and what is allowed, raised before anything is encoded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field, PrivateAttr, field_validator, model_validator

from mmctr import yamlconfig
from mmctr.config import Section, build, merge, parse_sets, read_yaml  # noqa: F401  (parse_sets re-exported)
from mmctr.errors import KitError
from mmctr.runtime import RuntimeSection, seed_field

CONFIG_DIR = Path(__file__).parent / "configs"
MAX_DIM = 1024  # a part's SVD size; 128-D is the output, so more only costs memory
MAX_FEATURE_DIM = 16384  # a precomputed feature vector (BERT 768, CLIP 1024, VLM hidden 4096...)


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask where there is one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class TextCfg(Section):
    enabled: bool = True
    model: str = Field("all-MiniLM-L6-v2", min_length=1)  # known name, local dir, or cached HF id
    batch_size: int = Field(256, ge=1, le=65536)
    max_length: int = Field(64, ge=1, le=8192)  # tokens; titles are short
    prefix: str = ""  # e.g. "query: " for multilingual-e5


class ImageCfg(Section):
    enabled: bool = True
    model: str = Field("efficientnet-lite0", min_length=1)  # or an open_clip architecture (ViT-L-14)
    pretrained: Optional[str] = None  # open_clip pretrained tag (laion2b_s32b_b82k, openai...)
    checkpoint: Optional[str] = None  # local weights file (or a HF hub id already in the local cache)
    image_size: Optional[int] = Field(None, ge=16, le=1024)  # None = the model's own input size
    batch_size: int = Field(64, ge=1, le=4096)
    workers: int = Field(default_factory=usable_cores, ge=0, le=256)  # DataLoader decode workers
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU


class TagsCfg(Section):
    enabled: bool = True
    dim: int = Field(64, ge=1, le=MAX_DIM)  # TF-IDF bag of tags, truncated SVD to this size


class BehaviourCfg(Section):
    enabled: bool = True
    dim: int = Field(64, ge=1, le=MAX_DIM)  # PPMI co-occurrence, truncated SVD to this size
    window: int = Field(5, ge=1, le=64)  # items at most this far apart co-occur (weight 1/distance)
    item_seq: bool = True  # use item_seq.parquet
    train_sequences: bool = True  # use train.parquet item_seq + the target of positive clicks
    min_count: int = Field(1, ge=1, le=1_000_000)  # items seen fewer times are cold
    neg_shift: float = Field(1.0, ge=1.0, le=1e6)  # PPMI = max(PMI - log(neg_shift), 0)
    # co-occurrences are counted on whole sequences drawn at random (runtime.seed) up to this many
    # item occurrences (0 = all): counting and the SVD cost follow it, not item_seq's length
    max_occurrences: int = Field(4_000_000, ge=0, le=10**11)
    svd_iterations: int = Field(4, ge=0, le=50)  # power iterations of the randomized SVD (2 sparse products each)


class SourceCfg(Section):
    """One precomputed feature: a list column of item_feature.parquet, or a file keyed by item_id
    (parquet with item_id + one list column, or .npy whose row i is item i; row 0 = padding when
    it has n_items + 1 rows)."""

    column: Optional[str] = Field(None, min_length=1)
    file: Optional[str] = Field(None, min_length=1)
    file_column: Optional[str] = Field(None, min_length=1)  # a parquet file's feature column
    name: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # part name in the manifest
    weight: float = Field(1.0, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.column is None) == (self.file is None):
            raise ValueError("give exactly one of 'column' (of item_feature.parquet) or 'file'")
        if self.file_column is not None and self.file is None:
            raise ValueError("'file_column' goes with 'file'")
        return self

    def part_name(self) -> str:
        return "precomputed:" + (self.name or self.column or Path(self.file).stem)


class PrecomputedCfg(Section):
    enabled: bool = False
    sources: list[SourceCfg] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _sources(self):
        if self.enabled and not self.sources:
            raise ValueError("precomputed.enabled needs at least one source "
                             "(e.g. sources: [{column: txt_emb_BERT}])")
        names = [s.part_name() for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two precomputed sources share the name {dup}; give each a distinct 'name'")
        return self


class FusionWeights(Section):
    text: float = Field(1.0, ge=0.0, le=100.0)
    image: float = Field(1.0, ge=0.0, le=100.0)
    tags: float = Field(1.0, ge=0.0, le=100.0)
    behaviour: float = Field(1.0, ge=0.0, le=100.0)


class FusionCfg(Section):
    method: Literal["pca", "contrastive"] = "contrastive"
    weights: FusionWeights = Field(default_factory=FusionWeights)  # precomputed: each source's weight
    steps: int = Field(400, ge=1, le=100_000)  # contrastive: optimiser steps (batches of warm items)
    batch_size: int = Field(1024, ge=2, le=65536)
    lr: float = Field(2.0e-3, gt=0.0, le=1.0)
    hidden: int = Field(256, ge=1, le=8192)
    content_dim: int = Field(256, ge=1, le=4096)  # content parts first reduced to this many PCs
    temperature: float = Field(0.1, ge=1e-3, le=10.0)
    behaviour_mix: float = Field(1.0, ge=0.0, le=100.0)  # weight of the item's own behaviour vector
    holdout: float = Field(0.05, ge=0.0, le=0.5)  # share of warm items held out to measure recall
    # Rows are L2-normalised, then scaled to this norm. "provided": the mean row norm of the data's
    # own item_emb_d128, the scale the organisers chose the fixed DIN's hyperparameters for (that
    # DIN feeds item_emb_d128 raw into a Linear layer, so the scale acts as a learning rate on it);
    # sqrt(128) (unit variance per dimension) where the data has no item_info.parquet. A number
    # fixes the norm. Figures: docs/task1.md.
    output_norm: Union[float, str] = "provided"

    @field_validator("output_norm", mode="before")
    @classmethod
    def _norm(cls, v):
        if v == "provided" or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1000):
            return v
        raise ValueError("must be 'provided' (the provided item_emb_d128's mean row norm) or a number in (0, 1000]")


class RuntimeCfg(RuntimeSection):
    # 2, not torch's default: OpenBLAS and torch otherwise start one thread per core, and on a
    # shared machine the SVDs and encoders then fight over the cores (task1/linalg.py)
    num_threads: int = Field(2, ge=0, le=1024)
    seed: int = seed_field()


CONTENT = ("text", "image", "tags")


class Task1Config(Section):
    text: TextCfg = Field(default_factory=TextCfg)
    image: ImageCfg = Field(default_factory=ImageCfg)
    tags: TagsCfg = Field(default_factory=TagsCfg)
    behaviour: BehaviourCfg = Field(default_factory=BehaviourCfg)
    precomputed: PrecomputedCfg = Field(default_factory=PrecomputedCfg)
    fusion: FusionCfg = Field(default_factory=FusionCfg)
    runtime: RuntimeCfg = Field(default_factory=RuntimeCfg)
    _source: Optional[str] = PrivateAttr(None)

    @model_validator(mode="after")
    def _parts(self):  # KitError passes through pydantic unwrapped: these name no single key
        if not self.enabled_parts():
            raise KitError("every part is disabled: enable at least one of "
                             + ", ".join(PARTS))
        weights = [getattr(self.fusion.weights, p) for p in (*CONTENT, "behaviour") if getattr(self, p).enabled]
        weights += [src.weight for src in self.precomputed.sources] if self.precomputed.enabled else []
        if not any(w > 0 for w in weights):
            raise KitError("every enabled part has fusion weight 0: the embedding would be all zeros; "
                           "give at least one enabled part a positive weight")
        if self.fusion.method == "contrastive":
            if not self.behaviour.enabled:
                raise KitError("fusion.method=contrastive aligns content to behaviour: "
                                 "set behaviour.enabled=true or use fusion.method=pca")
            if not any(getattr(self, p).enabled for p in (*CONTENT, "precomputed")):
                raise KitError("fusion.method=contrastive needs a content part "
                                 "(text, image, tags or precomputed)")
        return self

    def enabled_parts(self) -> list:
        return [p for p in PARTS if getattr(self, p).enabled]

    @property
    def source(self) -> Optional[str]:
        return self._source

    def dump(self) -> dict:
        """Plain dict for manifests (with the config file it came from)."""
        return {**self.model_dump(mode="json"), "config_source": self._source}


PARTS = ("text", "image", "tags", "behaviour", "precomputed")


def config_path(name_or_path) -> Path:
    return yamlconfig.config_path(name_or_path, CONFIG_DIR)


def load_config(name_or_path=None, overrides: dict | None = None) -> Task1Config:
    """Defaults <- YAML file (a path or a name in task1/configs) <- overrides; typed and checked."""
    raw, source = {}, None
    if name_or_path is not None:
        path = config_path(name_or_path)
        raw = read_yaml(path)
        source = str(path)
    where = " + ".join(x for x in (source, "--set" if overrides else None) if x) or None
    try:
        cfg = build(Task1Config, merge(raw, overrides or {}), where)
    except KitError as exc:
        msg = str(exc)
        raise KitError(msg if where is None or msg.startswith(where) else f"{where}: {msg}") from None
    cfg._source = source
    return cfg

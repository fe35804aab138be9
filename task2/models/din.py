"""The official DIN baseline (FuxiCTR 2.3.7 configuration of the challenge), re-implemented.

Target item = [item_id emb (64), mean tag emb (64), Linear(128,128,bias=False)(item_emb_d128)];
the same encoder embeds every sequence item (shared tables). DIN attention pools the sequence
against the target; likes/views levels of the target get their own 64-D embeddings; a
[1024, 512, 256] ReLU MLP with batch norm gives the logit.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field, field_validator

from mmctr.config import Section, build

from .layers import ItemEncoder, TargetAttention, mlp

Units = list[int]


class DINConfig(Section):
    """The DIN's own keys; defaults are challenge.md's fixed DIN (net_dropout: the organisers' tuner)."""

    embedding_dim: int = Field(64, ge=1, le=1024)
    dnn_hidden_units: Units = Field([1024, 512, 256], min_length=1)
    dnn_activations: Literal["relu"] = "relu"
    attention_hidden_units: Units = Field([512, 256], min_length=1)
    attention_activation: Literal["relu"] = "relu"
    attention_dropout: float = Field(0.1, ge=0, lt=1)
    din_use_softmax: bool = False
    batch_norm: bool = True
    net_dropout: float = Field(0.1, ge=0, lt=1)  # the organisers' tuner value

    @field_validator("dnn_activations", "attention_activation", mode="before")
    @classmethod
    def _lower(cls, v):
        return v.lower() if isinstance(v, str) else v

    @field_validator("dnn_hidden_units", "attention_hidden_units")
    @classmethod
    def _widths(cls, v):
        if any(not 1 <= u <= 65536 for u in v):
            raise ValueError("every width must be in 1..65536")
        return v


DEFAULTS = DINConfig().model_dump()


def init_fuxictr(module: nn.Module) -> None:
    """FuxiCTR 2.3.7's init: Linear/Conv1d weights xavier_normal, biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class DIN(nn.Module):
    def __init__(self, cfg: DINConfig | dict, tags: torch.Tensor, mm_emb: torch.Tensor, n_levels: int = 11,
                 seed: int = 0, n_tags: int | None = None, derive: bool = True):
        super().__init__()
        if isinstance(cfg, dict):  # a flat config mapping: take the DIN's keys from it
            seed = cfg.get("seed", seed)
            cfg = build(DINConfig, {k: v for k, v in cfg.items() if k in DINConfig.model_fields})
        d = cfg.embedding_dim
        self.items = ItemEncoder(tags, mm_emb, id_dim=d, tag_dim=d, mm_dim=mm_emb.shape[1], seed=seed,
                                 n_tags=n_tags, derive=derive)
        dim = self.items.out_dim
        self.attention = TargetAttention(dim, cfg.attention_hidden_units, cfg.attention_dropout,
                                         cfg.din_use_softmax)
        self.likes = nn.Embedding(n_levels, d)
        self.views = nn.Embedding(n_levels, d)
        self.dnn = mlp(2 * dim + 2 * d, cfg.dnn_hidden_units, dropout=cfg.net_dropout,
                       batch_norm=cfg.batch_norm, out_dim=1)
        init_fuxictr(self)
        for emb in (self.likes, self.views):  # FuxiCTR: every embedding table N(0, 1e-4)
            nn.init.normal_(emb.weight, std=1e-4)

    def forward(self, batch: dict) -> torch.Tensor:
        seq = batch["seq"]
        target, items = self.items.encode(batch["item"], seq)
        pooled = self.attention(target, items, seq > 0)
        x = torch.cat([target, pooled, self.likes(batch["likes"]), self.views(batch["views"])], -1)
        return self.dnn(x).squeeze(-1)

    def embedding_parameters(self):
        return [*self.items.embedding_parameters(), self.likes.weight, self.views.weight]

"""The kit's main CTR model, after the winners' reports (challenge.md).

Every sequence item is paired with the target ([s, t, s*t] → d_model); a transformer runs over
[target; pairs] with learned recency positions; multi-head target attention pools the sequence;
a DCNv2 cross network and a deep MLP, side by side, cross all of it with the likes/views levels.
Items carry an id embedding, tag embedding, a learned projection of the frozen 128-D multimodal
embedding and learned codes (k-means ids) of that embedding at two granularities.

Some components can be switched off for ablations (bench/bench_ablation.py): code_sizes: [],
n_layers: 0 (no transformer), cross_layers: 0.

`design: momo` is the rank-1 solution's shape in the same model (configs/transformer_dcn_momo.yaml):
the raw item vector (id, tags, projected embedding) of each sequence item concatenated with the
target's, a post-norm transformer over those tokens without a target token or positions, the
last `last_k` outputs flattened plus a max-pool, beside the likes/views levels and the target,
into the DCNv2 and an MLP head (`head_hidden_units`). `momo_mask: as_run` feeds PyTorch's
src_key_padding_mask (True = ignore) with 1 on real items, as their loader did: the transformer
then attends to padding only (to the most recent item alone when a sequence is full) and the
outputs at real positions are zeroed; `corrected` ignores padding instead. Initialised as FuxiCTR
initialises their model; likes/views level 0 a frozen zero row, as FuxiCTR's padding_idx makes it.
tests/test_momo_parity.py checks all of it against their own code.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field, ValidationInfo, field_validator

from mmctr.config import Section

from .layers import CrossNetV2, ItemEncoder, LastKTransformer, mlp


class TransformerDCNConfig(Section):
    """The main model's own keys."""

    embedding_dim: int = Field(64, ge=1, le=1024)
    tag_dim: int = Field(32, ge=1, le=1024)
    mm_dim: int = Field(64, ge=1, le=4096)
    code_sizes: list[int] = [64, 512]  # k-means granularities of the frozen embedding
    code_dim: int = Field(16, ge=1, le=1024)
    d_model: int = Field(128, ge=1, le=8192)
    n_heads: int = Field(4, ge=1, le=256)
    n_layers: int = Field(2, ge=0, le=64)  # 0 = no transformer: the pair tokens are pooled as they are
    ff_mult: int = Field(2, ge=1, le=16)
    attn_dropout: float = Field(0.1, ge=0, lt=1)
    cross_layers: int = Field(3, ge=0, le=64)
    dnn_hidden_units: list[int] = Field([512, 256], min_length=1)
    net_dropout: float = Field(0.1, ge=0, lt=1)
    batch_norm: bool = True
    design: Literal["kit", "momo"] = "kit"  # momo: the rank-1 solution's shape (module docstring)
    momo_mask: Literal["as_run", "corrected"] = "corrected"
    last_k: int = Field(16, ge=1, le=4096)  # momo: the most recent outputs kept, flattened
    ff_dim: int = Field(0, ge=0, le=65536)  # momo: the transformer's feed-forward width (0 = ff_mult x width)
    head_hidden_units: list[int] = []  # momo: an MLP head over [cross, deep] (empty = one linear layer)

    @field_validator("n_heads")
    @classmethod
    def _heads_divide_width(cls, v, info: ValidationInfo):
        d_model = info.data.get("d_model")
        if d_model is not None and d_model % v:
            raise ValueError(f"n_heads = {v} must divide d_model = {d_model}")
        return v

    @field_validator("code_sizes")
    @classmethod
    def _code_sizes(cls, v):
        if any(not 1 <= k <= 1_000_000 for k in v):
            raise ValueError("each code size must be in 1..1000000")
        return v

    @field_validator("dnn_hidden_units", "head_hidden_units")
    @classmethod
    def _widths(cls, v):
        if any(not 1 <= u <= 65536 for u in v):
            raise ValueError("every width must be in 1..65536")
        return v


DEFAULTS = TransformerDCNConfig().model_dump()


class TransformerDCN(nn.Module):
    def __init__(self, cfg: TransformerDCNConfig, tags: torch.Tensor, mm_emb: torch.Tensor, n_levels: int = 11,
                 max_len: int = 64, seed: int = 0, n_tags: int | None = None, derive: bool = True):
        super().__init__()
        d, dm = cfg.embedding_dim, cfg.d_model
        self.items = ItemEncoder(tags, mm_emb, id_dim=d, tag_dim=cfg.tag_dim, mm_dim=cfg.mm_dim,
                                 code_sizes=tuple(cfg.code_sizes), code_dim=cfg.code_dim, seed=seed,
                                 n_tags=n_tags, derive=derive)
        self.momo = None
        self.length_bucketing = cfg.design != "momo"  # momo: rows shuffled uniformly, as FuxiCTR's loader does
        if cfg.design == "momo":
            width = 2 * self.items.out_dim
            self.momo = LastKTransformer(width, cfg.n_heads, cfg.ff_dim or cfg.ff_mult * width, cfg.attn_dropout,
                                         cfg.n_layers, cfg.last_k, as_run=cfg.momo_mask == "as_run")
        else:
            self.item_proj = nn.Linear(self.items.out_dim, dm)
            self.pair_proj = nn.Linear(3 * dm, dm)
            self.pos = nn.Embedding(max_len + 1, dm)  # position counted from the most recent
            layer = nn.TransformerEncoderLayer(dm, cfg.n_heads, cfg.ff_mult * dm, cfg.attn_dropout,
                                               batch_first=True, norm_first=True, activation="gelu")
            self.encoder = (nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
                            if cfg.n_layers else None)
            self.target_attn = nn.MultiheadAttention(dm, cfg.n_heads, dropout=cfg.attn_dropout, batch_first=True)
        # momo: FuxiCTR's padding_idx 0 on every categorical feature (the raw level is the id), level 0 frozen
        pad = 0 if self.momo is not None else None
        self.likes = nn.Embedding(n_levels, d, padding_idx=pad)
        self.views = nn.Embedding(n_levels, d, padding_idx=pad)
        self.max_len = max_len
        x_dim = 2 * d + (self.items.out_dim + self.momo.out_dim if self.momo is not None else 5 * dm)
        self.cross = CrossNetV2(x_dim, cfg.cross_layers)
        self.deep = mlp(x_dim, cfg.dnn_hidden_units, dropout=cfg.net_dropout, batch_norm=cfg.batch_norm)
        last = x_dim + cfg.dnn_hidden_units[-1]
        self.head = mlp(last, cfg.head_hidden_units, out_dim=1) if cfg.head_hidden_units else nn.Linear(last, 1)
        if self.momo is not None:
            self._init_as_fuxictr()

    def _init_as_fuxictr(self) -> None:
        """momo: FuxiCTR 2.3.7's reset_parameters as their model gets it: modules that are exactly
        nn.Linear xavier_normal with zero biases (the attention's own projections keep PyTorch's
        init), embedding tables N(0, 1e-4) with zero padding rows (the item tables already are)."""
        for m in self.modules():
            if type(m) is nn.Linear:
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        with torch.no_grad():
            for emb in (self.likes, self.views):
                nn.init.normal_(emb.weight, std=1e-4)
                emb.weight[0].zero_()

    def forward(self, batch: dict) -> torch.Tensor:
        if self.momo is not None:
            # padding in front, as their loader gives: up to last_k; as_run, up to max_len, since there
            # a row as long as the batch's longest is "full" (keeps its last item) only at the file's width
            width = max(self.momo.k, self.max_len if self.momo.as_run else 0)
            seq = nn.functional.pad(batch["seq"], (max(0, width - batch["seq"].shape[1]), 0))
            t, s = self.items.encode(batch["item"], seq)
            x = torch.cat([self.likes(batch["likes"]), self.views(batch["views"]), t, self.momo(t, s, seq > 0)], -1)
            return self.head(torch.cat([self.cross(x), self.deep(x)], -1)).squeeze(-1)
        seq = batch["seq"]
        b, length = seq.shape
        mask = seq > 0
        t, s = self.items.encode(batch["item"], seq, self.item_proj)  # (b, dm), (b, l, dm)
        tt = t.unsqueeze(1).expand_as(s)
        recency = torch.arange(length - 1, -1, -1, device=seq.device)
        pairs = self.pair_proj(torch.cat([s, tt, s * tt], -1)) + self.pos(recency)
        tokens = torch.cat([t.unsqueeze(1), pairs], 1)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=seq.device), ~mask], 1)
        h = self.encoder(tokens, src_key_padding_mask=pad) if self.encoder is not None else tokens
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        mean = (h * keep).sum(1) / keep.sum(1)
        attn, _ = self.target_attn(t.unsqueeze(1), tokens, tokens, key_padding_mask=pad, need_weights=False)
        attn = attn.squeeze(1)
        x = torch.cat([t, h[:, 0], mean, attn, t * attn, self.likes(batch["likes"]), self.views(batch["views"])], -1)
        return self.head(torch.cat([self.cross(x), self.deep(x)], -1)).squeeze(-1)

    def embedding_parameters(self):
        return [*self.items.embedding_parameters(), self.likes.weight, self.views.weight]

    def id_parameters(self):
        """The item id table alone (for a separate learning rate or L2 on sparse ids)."""
        return self.items.id_parameters()

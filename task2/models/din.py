"""The official DIN baseline (FuxiCTR 2.3.7 configuration of the challenge), re-implemented.

Target item = [item_id emb (64), mean tag emb (64), Linear(128,128,bias=False)(item_emb_d128)];
the same encoder embeds every sequence item (shared tables). DIN attention pools the sequence
against the target; likes/views levels of the target get their own 64-D embeddings; a
[1024, 512, 256] ReLU MLP with batch norm gives the logit.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import ItemEncoder, TargetAttention, mlp

DEFAULTS = {
    "embedding_dim": 64,
    "dnn_hidden_units": [1024, 512, 256],
    "dnn_activations": "relu",
    "attention_hidden_units": [512, 256],
    "attention_activation": "relu",
    "attention_dropout": 0.1,
    "din_use_softmax": False,
    "batch_norm": True,
    "net_dropout": 0.0,
}


class DIN(nn.Module):
    def __init__(self, cfg: dict, tags: torch.Tensor, mm_emb: torch.Tensor, n_levels: int = 11):
        super().__init__()
        for key in ("dnn_activations", "attention_activation"):
            if str(cfg[key]).lower() != "relu":
                raise ValueError(f"{key}: only relu is implemented, got {cfg[key]!r}")
        d = cfg["embedding_dim"]
        self.items = ItemEncoder(tags, mm_emb, id_dim=d, tag_dim=d, mm_dim=mm_emb.shape[1], seed=cfg["seed"])
        dim = self.items.out_dim
        self.attention = TargetAttention(dim, cfg["attention_hidden_units"], cfg["attention_dropout"],
                                         cfg["din_use_softmax"])
        self.likes = nn.Embedding(n_levels, d)
        self.views = nn.Embedding(n_levels, d)
        self.dnn = mlp(2 * dim + 2 * d, cfg["dnn_hidden_units"], dropout=cfg["net_dropout"],
                       batch_norm=cfg["batch_norm"], out_dim=1)

    def forward(self, batch: dict) -> torch.Tensor:
        seq = batch["seq"]
        target, items = self.items.encode(batch["item"], seq)
        pooled = self.attention(target, items, seq > 0)
        x = torch.cat([target, pooled, self.likes(batch["likes"]), self.views(batch["views"])], -1)
        return self.dnn(x).squeeze(-1)

    def embedding_parameters(self):
        return [*self.items.embedding_parameters(), self.likes.weight, self.views.weight]

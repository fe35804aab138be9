"""The kit's main CTR model, after the winners' reports (challenge.md).

Every sequence item is paired with the target ([s, t, s*t] → d_model); a transformer runs over
[target; pairs] with learned recency positions; multi-head target attention pools the sequence;
a DCNv2 cross network and a deep MLP, side by side, cross all of it with the likes/views levels.
Items carry an id embedding, tag embedding, a learned projection of the frozen 128-D multimodal
embedding and learned codes (k-means ids) of that embedding at two granularities.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .layers import CrossNetV2, ItemEncoder, mlp

DEFAULTS = {
    "embedding_dim": 64,
    "tag_dim": 32,
    "mm_dim": 64,
    "code_sizes": [64, 512],
    "code_dim": 16,
    "mm_standardize": True,  # z-score the frozen embedding per dimension before its projection
    "d_model": 128,
    "n_heads": 4,
    "n_layers": 2,
    "ff_mult": 2,
    "attn_dropout": 0.1,
    "cross_layers": 3,
    "dnn_hidden_units": [512, 256],
    "net_dropout": 0.1,
    "batch_norm": True,
}


class TransformerDCN(nn.Module):
    def __init__(self, cfg: dict, tags: torch.Tensor, mm_emb: torch.Tensor, n_levels: int = 11):
        super().__init__()
        d, dm = cfg["embedding_dim"], cfg["d_model"]
        self.items = ItemEncoder(tags, mm_emb, id_dim=d, tag_dim=cfg["tag_dim"], mm_dim=cfg["mm_dim"],
                                 code_sizes=tuple(cfg["code_sizes"]), code_dim=cfg["code_dim"], seed=cfg["seed"],
                                 standardize=cfg["mm_standardize"])
        self.item_proj = nn.Linear(self.items.out_dim, dm)
        self.pair_proj = nn.Linear(3 * dm, dm)
        self.pos = nn.Embedding(cfg["max_len"] + 1, dm)  # position counted from the most recent
        layer = nn.TransformerEncoderLayer(dm, cfg["n_heads"], cfg["ff_mult"] * dm, cfg["attn_dropout"],
                                           batch_first=True, norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, cfg["n_layers"], enable_nested_tensor=False)
        self.target_attn = nn.MultiheadAttention(dm, cfg["n_heads"], dropout=cfg["attn_dropout"], batch_first=True)
        self.likes = nn.Embedding(n_levels, d)
        self.views = nn.Embedding(n_levels, d)
        x_dim = 5 * dm + 2 * d
        self.cross = CrossNetV2(x_dim, cfg["cross_layers"])
        self.deep = mlp(x_dim, cfg["dnn_hidden_units"], dropout=cfg["net_dropout"], batch_norm=cfg["batch_norm"])
        self.head = nn.Linear(x_dim + cfg["dnn_hidden_units"][-1], 1)

    def forward(self, batch: dict) -> torch.Tensor:
        seq = batch["seq"]
        b, l = seq.shape
        mask = seq > 0
        t, s = self.items.encode(batch["item"], seq, self.item_proj)  # (b, dm), (b, l, dm)
        tt = t.unsqueeze(1).expand_as(s)
        recency = torch.arange(l - 1, -1, -1, device=seq.device)
        pairs = self.pair_proj(torch.cat([s, tt, s * tt], -1)) + self.pos(recency)
        tokens = torch.cat([t.unsqueeze(1), pairs], 1)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=seq.device), ~mask], 1)
        h = self.encoder(tokens, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        mean = (h * keep).sum(1) / keep.sum(1)
        attn, _ = self.target_attn(t.unsqueeze(1), tokens, tokens, key_padding_mask=pad, need_weights=False)
        attn = attn.squeeze(1)
        x = torch.cat([t, h[:, 0], mean, attn, t * attn, self.likes(batch["likes"]), self.views(batch["views"])], -1)
        return self.head(torch.cat([self.cross(x), self.deep(x)], -1)).squeeze(-1)

    def embedding_parameters(self):
        return [*self.items.embedding_parameters(), self.likes.weight, self.views.weight]

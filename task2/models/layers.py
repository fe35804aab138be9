"""Building blocks shared by the CTR models."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(in_dim: int, hidden: list, dropout: float = 0.0, batch_norm: bool = False,
        out_dim: int | None = None) -> nn.Sequential:
    layers: list = []
    for h in hidden:
        layers.append(nn.Linear(in_dim, h))
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = h
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def kmeans_codes(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """Cluster ids (1..k) of rows of x; row 0 (padding) gets code 0. Deterministic."""
    g = torch.Generator().manual_seed(seed)
    data = F.normalize(x[1:].float(), dim=1)
    k = min(k, len(data))
    centers = data[torch.randperm(len(data), generator=g)[:k].to(data.device)].clone()
    for _ in range(iters):
        assign = (data @ centers.T).argmax(1)
        sums = torch.zeros_like(centers).index_add_(0, assign, data)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        centers = torch.where(counts > 0, F.normalize(sums, dim=1), centers)
    assign = (data @ centers.T).argmax(1)
    return torch.cat([torch.zeros(1, dtype=torch.long, device=data.device), assign + 1])


class ItemEncoder(nn.Module):
    """Item id embedding + mean-pooled tag embedding + projected frozen 128-D embedding
    (+ optional learned codes of that embedding at several granularities).

    The item table (tags, frozen embedding) comes from item_info and is not saved; what is
    derived from it (the k-means codes) is a persistent buffer,
    so a model loaded from a checkpoint (`derive=False`) never recomputes it.
    """

    def __init__(self, tags: torch.Tensor, mm_emb: torch.Tensor, id_dim: int, tag_dim: int,
                 mm_dim: int, code_sizes: tuple = (), code_dim: int = 16, seed: int = 0,
                 n_tags: int | None = None, derive: bool = True):
        super().__init__()
        n_rows, width = mm_emb.shape
        self.register_buffer("tags", tags.long(), persistent=False)
        self.register_buffer("mm_emb", mm_emb.float(), persistent=False)
        self.id_emb = nn.Embedding(n_rows, id_dim, padding_idx=0)
        self.tag_emb = nn.Embedding(n_tags or int(tags.max()) + 1, tag_dim, padding_idx=0)
        self.mm_proj = nn.Linear(width, mm_dim, bias=False)
        self.code_sizes = tuple(code_sizes)
        self.register_buffer("codes", torch.zeros(n_rows, len(code_sizes), dtype=torch.long),
                             persistent=bool(code_sizes))
        self.code_embs = nn.ModuleList(nn.Embedding(k + 1, code_dim, padding_idx=0) for k in code_sizes)
        self.out_dim = id_dim + tag_dim + mm_dim + code_dim * len(code_sizes)
        for emb in (self.id_emb, self.tag_emb, *self.code_embs):
            nn.init.normal_(emb.weight, std=1e-4)
            with torch.no_grad():
                emb.weight[0].zero_()
        if derive:
            self.derive_state(seed)

    @torch.no_grad()
    def derive_state(self, seed: int) -> None:
        """K-means codes of the frozen embedding (once, at training start)."""
        for j, k in enumerate(self.code_sizes):
            self.codes[:, j] = kmeans_codes(self.mm_emb, k, seed=seed + j)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tags = self.tags[ids]
        tag_mask = (tags > 0).unsqueeze(-1).float()
        tag_vec = (self.tag_emb(tags) * tag_mask).sum(-2) / tag_mask.sum(-2).clamp(min=1)
        codes = [emb(self.codes[ids, j]) for j, emb in enumerate(self.code_embs)]
        return torch.cat([self.id_emb(ids), tag_vec, self.mm_proj(self.mm_emb[ids]), *codes], -1)

    def encode(self, target: torch.Tensor, seq: torch.Tensor, proj: nn.Module | None = None,
               dedup: bool | None = None):
        """Embed targets (b,) and sequences (b, l). Returns (b, d) and (b, l, d).

        On the CPU each distinct item is embedded once (a batch holds far fewer distinct items
        than positions). On a GPU `torch.unique` would force a host sync per step (its output
        size is data-dependent), and embedding every position is cheap there, so no dedup.
        `dedup` forces either path (both give the same result).
        """
        ids = torch.cat([target, seq.flatten()])
        if dedup is None:
            dedup = not ids.is_cuda
        if not dedup:
            vec = self(ids)
            if proj is not None:
                vec = proj(vec)
        else:
            uniq, inv = torch.unique(ids, return_inverse=True)
            vec = self(uniq)
            if proj is not None:
                vec = proj(vec)
            vec = vec[inv]
        return vec[:len(target)], vec[len(target):].view(*seq.shape, -1)

    def embedding_parameters(self):
        return [*self.id_parameters(), self.tag_emb.weight, self.mm_proj.weight, *(e.weight for e in self.code_embs)]

    def id_parameters(self):
        """The item id table (sparse, the part that overfits first)."""
        return [self.id_emb.weight]


class TargetAttention(nn.Module):
    """DIN attention: an MLP scores each (target, sequence item) pair, scores weight the items.
    On the CPU the MLP runs only on non-padded positions, so short sequences cost little."""

    def __init__(self, dim: int, hidden: list, dropout: float, use_softmax: bool):
        super().__init__()
        self.score = mlp(4 * dim, hidden, dropout=dropout, out_dim=1)
        self.use_softmax = use_softmax

    def forward(self, target: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor,
                dense: bool | None = None) -> torch.Tensor:
        b, length, d = seq.shape
        if seq.is_cuda if dense is None else dense:  # dense: nonzero() would sync the host every step
            q = target.unsqueeze(1).expand_as(seq)
            scores = self.score(torch.cat([q, seq, q - seq, q * seq], -1)).squeeze(-1) * mask
        else:
            rows, cols = mask.nonzero(as_tuple=True)
            q, k = target[rows], seq[rows, cols]
            s = self.score(torch.cat([q, k, q - k, q * k], -1)).squeeze(-1)
            scores = torch.zeros(b, length, dtype=s.dtype, device=seq.device).index_put_((rows, cols), s)
        if self.use_softmax:
            scores = scores.masked_fill(~mask, -1e9).softmax(-1) * mask
        return (scores.unsqueeze(-1).to(seq.dtype) * seq).sum(1)


class CrossNetV2(nn.Module):
    """DCNv2 cross layers: x_{l+1} = x0 * (W x_l + b) + x_l."""

    def __init__(self, dim: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class LastKTransformer(nn.Module):
    """A post-norm transformer over tokens [sequence item ; target] (no positions, no target
    token); returns the last k outputs flattened and a linear map of their max-pool, both over
    the positions the mask keeps (the others are zeroed / left out of the max).

    as_run=True passes `mask` (True on real items) straight as src_key_padding_mask (True =
    ignore), as the rank-1 solution's loader did; False ignores the padding. Either way a row
    with every position ignored keeps its last one."""

    def __init__(self, width: int, n_heads: int, ff_dim: int, dropout: float, n_layers: int, k: int,
                 as_run: bool = False):
        super().__init__()
        if width % n_heads:
            raise ValueError(f"n_heads = {n_heads} must divide the token width {width}")
        layer = nn.TransformerEncoderLayer(width, n_heads, ff_dim, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.pool = nn.Linear(width, width)
        self.k, self.as_run = k, as_run
        self.out_dim = (k + 1) * width

    def ignored(self, mask: torch.Tensor) -> torch.Tensor:
        ignore = mask.clone() if self.as_run else ~mask
        ignore[ignore.all(-1), -1] = False
        return ignore

    def forward(self, target: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([seq, target.unsqueeze(1).expand(-1, seq.shape[1], -1)], -1)
        ignore = self.ignored(mask)
        h = self.encoder(tokens, src_key_padding_mask=ignore).masked_fill(ignore.unsqueeze(-1), 0.0)
        top = self.pool(h.masked_fill(ignore.unsqueeze(-1), -1e9).amax(1))
        return torch.cat([h[:, -self.k:].flatten(1), top], -1)

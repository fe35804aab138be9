"""Parquet → compact tensors, read once; batches are index slices, no per-row Python."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import torch

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.io import read_parquet, read_parquet_schema
from mmctr.item_info import read_item_info


def seq_matrix(col: pa.ChunkedArray, max_len: int) -> np.ndarray:
    """Lists of item ids (left-padded, most recent last) → (n, max_len) int32, last max_len kept."""
    arr = col.combine_chunks()
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False).astype(np.int32)
    lengths = np.diff(offsets)
    n = len(lengths)
    out = np.zeros((n, max_len), dtype=np.int32)
    if n and np.all(lengths == lengths[0]) and lengths[0] >= max_len:  # the common fixed-width case
        return np.ascontiguousarray(values.reshape(n, lengths[0])[:, -max_len:])
    keep = np.minimum(lengths, max_len)
    row = np.repeat(np.arange(n), keep)
    within = np.arange(keep.sum()) - np.repeat(np.cumsum(keep) - keep, keep)
    src = np.repeat(offsets[1:] - keep, keep) + within
    out[row, max_len - np.repeat(keep, keep) + within] = values[src]
    return out


@dataclass
class Split:
    """One split as tensors. `label` is None for test."""
    seq: torch.Tensor  # (n, L) int32
    item: torch.Tensor  # (n,) int32
    likes: torch.Tensor  # (n,) int8
    views: torch.Tensor  # (n,) int8
    label: Optional[torch.Tensor]  # (n,) float32
    path: Path
    lengths: torch.Tensor  # (n,) int32 on the CPU: columns from the first non-padding item to the end

    def __len__(self) -> int:
        return len(self.item)

    def to(self, device) -> "Split":
        """The same split with its tensors on `device` (lengths stay on the CPU)."""
        def move(t):
            return None if t is None else t.to(device, non_blocking=True)

        return Split(move(self.seq), move(self.item), move(self.likes), move(self.views),
                     move(self.label), self.path, self.lengths)

    def batch(self, idx: torch.Tensor) -> dict:
        """Gather one batch (`idx` on the CPU); sequences trimmed to the batch's longest one.

        The trim width comes from the CPU-side lengths, so no value is read back from a GPU.
        """
        keep = max(int(self.lengths[idx].max()), 1) if len(idx) else 1
        idx = idx.to(self.seq.device, non_blocking=True)
        b = {"seq": self.seq[idx, self.seq.shape[1] - keep:].long(), "item": self.item[idx].long(),
             "likes": self.likes[idx].long(), "views": self.views[idx].long()}
        if self.label is not None:
            b["label"] = self.label[idx]
        return b


def load_split(path, max_len: int, n_items: int, need_label: bool) -> Split:
    """Read one of train/valid/test; fail clearly on missing columns or out-of-range ids."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"missing split file: {path}")
    names = read_parquet_schema(path, what=path.stem).names
    want = [C.ITEM_SEQ, C.ITEM_ID, C.LIKES, C.VIEWS] + ([C.LABEL] if need_label else [])
    missing = [c for c in want if c not in names]
    if missing:
        raise KitError(f"{path}: missing column(s) {missing} (has {names})")
    t = read_parquet(path, columns=want, what=path.stem)
    item = t.column(C.ITEM_ID).to_numpy().astype(np.int64)
    seq = seq_matrix(t.column(C.ITEM_SEQ), max_len)
    for name, arr in ((C.ITEM_ID, item), (C.ITEM_SEQ, seq)):
        bad = np.flatnonzero(((arr < 0) | (arr > n_items)).reshape(len(item), -1).any(axis=1))
        if bad.size:
            raise KitError(f"{path}:{name} row {bad[0]}: item id outside 0..{n_items} of item_info "
                           f"({bad.size} rows) — is item_info.parquet from the same data set?")
    levels = {}
    for name in (C.LIKES, C.VIEWS):
        v = t.column(name).to_numpy().astype(np.int64)
        bad = np.flatnonzero((v < 0) | (v > C.LEVEL_MAX))
        if bad.size:
            raise KitError(f"{path}:{name} row {bad[0]}: {v[bad[0]]} outside 0..{C.LEVEL_MAX}")
        levels[name] = torch.from_numpy(v.astype(np.int8))
    label = None
    if need_label:
        y = t.column(C.LABEL).to_numpy(zero_copy_only=False).astype(np.float32)
        bad = np.flatnonzero(~np.isin(y, (0.0, 1.0)))
        if bad.size:
            raise KitError(f"{path}:{C.LABEL} row {bad[0]}: {y[bad[0]]} is not 0 or 1")
        label = torch.from_numpy(y)
    nonzero = seq != 0
    lengths = np.where(nonzero.any(1), max_len - nonzero.argmax(1), 0).astype(np.int32)
    return Split(torch.from_numpy(seq), torch.from_numpy(item.astype(np.int32)),
                 levels[C.LIKES], levels[C.VIEWS], label, path, torch.from_numpy(lengths))


@dataclass
class ItemTable:
    """item_info as tensors: row i = item i."""
    tags: torch.Tensor  # (n+1, 5) int64
    emb: torch.Tensor  # (n+1, 128) float32
    path: Path

    @property
    def n_items(self) -> int:
        return len(self.emb) - 1

    @property
    def n_tags(self) -> int:
        return int(self.tags.max()) + 1

    @classmethod
    def load(cls, path) -> "ItemTable":
        """item_info via the contract's reader (finite embeddings, tag ids in range, row order)."""
        tags, emb = read_item_info(path)
        return cls(torch.from_numpy(np.array(tags)), torch.from_numpy(np.array(emb)), Path(path))


BUCKET = 32  # batches per length-sorted bucket


def iter_batches(n: int, batch_size: int, generator=None, shuffle=True,
                 rank: int = 0, world: int = 1, lengths: torch.Tensor | None = None) -> list:
    """Index batches (CPU tensors) over range(n); with DDP each rank takes an equal share.

    With `lengths` (sequence lengths), rows are shuffled, then sorted by length inside buckets
    of BUCKET batches and the batches shuffled again: batches hold sequences of similar length,
    so trimming padding per batch removes most of it while batches stay random.
    """
    idx = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if world > 1:
        per = n // world
        idx = idx[rank * per:(rank + 1) * per]
    batches = []
    if lengths is not None and shuffle:
        lens = lengths[idx]
        span = batch_size * BUCKET
        for start in range(0, len(idx), span):
            chunk = idx[start:start + span][torch.argsort(lens[start:start + span], stable=True)]
            batches += list(chunk.split(batch_size))
        order = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in order]
    else:
        batches = list(idx.split(batch_size))
    return batches

"""Encoder output cache: one .npy per (encoder, model id, weights sha256, settings, input hash).

A second build with a new fusion (or new behaviour settings) re-uses the encoded text and
images instead of decoding 91k covers again. Entries are written atomically, with a small
JSON beside each that says what produced it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mmctr.io import atomic_path, write_json

DEFAULT_DIR = "cache/task1"


def cache_key(**parts) -> str:
    """A stable hash of the JSON of everything that decides an encoder's output."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class EncoderCache:
    def __init__(self, root=DEFAULT_DIR, enabled: bool = True):
        self.root = Path(root)
        self.enabled = enabled
        self.hits: list = []
        self.misses: list = []

    def _path(self, name: str, key: str) -> Path:
        return self.root / name / f"{key}.npz"

    def get(self, name: str, key: str):
        """The cached arrays (a dict) or None."""
        path = self._path(name, key)
        if not (self.enabled and path.is_file()):
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
        except Exception:  # noqa: BLE001  a damaged entry (BadZipFile, zlib, truncated) is a miss, then overwritten
            return None
        self.hits.append(name)
        return out

    def put(self, name: str, key: str, meta: dict, **arrays) -> None:
        if not self.enabled:
            return
        path = self._path(name, key)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        write_json(path.with_suffix(".json"), {"name": name, "key": key, **meta})

    def get_or_compute(self, name: str, key: str, meta: dict, compute):
        """(arrays dict, hit bool): compute() must return a dict of arrays."""
        got = self.get(name, key)
        if got is not None:
            return got, True
        self.misses.append(name)
        arrays = compute()
        self.put(name, key, meta, **arrays)
        return arrays, False

"""Title text -> sentence embeddings with sentence-transformers, from weights resolved locally."""
from __future__ import annotations

import numpy as np

from mmctr.errors import KitError

from ..weights import Weights


def load(weights: Weights, device: str):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(weights.path), device=device, local_files_only=True)
    except Exception as exc:
        raise KitError(f"cannot load text model '{weights.name}' from {weights.path}: "
                       f"{type(exc).__name__}: {exc}") from None


def encode(titles: list, weights: Weights, cfg, device: str, progress: bool = True) -> np.ndarray:
    """(len(titles), d) float32 L2-normalised embeddings; titles must be non-empty strings; cfg: TextCfg."""
    if not progress:  # transformers' own "Loading weights" bar too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    model = load(weights, device)
    model.max_seq_length = cfg.max_length
    texts = [cfg.prefix + t for t in titles]
    emb = model.encode(texts, batch_size=cfg.batch_size, convert_to_numpy=True,
                       normalize_embeddings=True, show_progress_bar=progress)
    return np.asarray(emb, dtype=np.float32)

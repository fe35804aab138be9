"""Small, fast task1 configs for tests: cfg_of(*parts) enables exactly those parts."""
from __future__ import annotations

import json

import numpy as np

from mmctr import contract as C
from mmctr.item_info import read_item_info
from task1.config import load_config

FAST = {"image": {"image_size": 32, "workers": 0, "batch_size": 64}, "tags": {"dim": 8},
        "behaviour": {"dim": 8}, "fusion": {"steps": 10, "hidden": 16, "content_dim": 16, "batch_size": 64},
        "runtime": {"num_threads": 1}}
PARTS = ("text", "image", "tags", "behaviour")


def cfg_of(*parts, method="pca", **extra):
    over = json.loads(json.dumps(FAST))
    for p in PARTS:
        over.setdefault(p, {})["enabled"] = p in parts
    over["fusion"]["method"] = method
    for sec, vals in extra.items():
        over.setdefault(sec, {}).update(vals)
    return load_config("default", over)


def provided_norm(data) -> float:
    """The default fusion.output_norm, computed here on its own: the mean row norm of the data's
    item_emb_d128 (row 0, padding, left out); task1's rows are L2-normalised and scaled to it."""
    emb = read_item_info(data / C.ITEM_INFO.relpath)[1]
    return float(np.linalg.norm(emb[1:].astype(np.float64), axis=1).mean())

"""Small, fast task1 configs for tests: cfg_of(*parts) enables exactly those parts."""
from __future__ import annotations

import json

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

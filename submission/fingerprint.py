"""What ran under the Task-1 track: the DIN's architecture fingerprint, and re-scoring test rows.

The fingerprint of a network is its module types (in order) and its state_dict names and shapes,
with the item-table sizes written as symbols, so it does not depend on the data. The fixed
DIN's fingerprint hash is frozen in mmctr.tracks (FIXED_DIN_ARCH_SHA256), and so are its logits on
a fixed synthetic batch (FIXED_DIN_LOGITS: an edited forward with the same modules changes them);
print the current code's with `python -m submission.fingerprint` (only after a deliberate change
of the baseline).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from mmctr.tracks import fixed_din_config

RESCORE_ROWS = 2000  # test rows re-scored with the checkpoint (a fresh random sample per check:
# a fixed sample would tell a participant which rows may be edited unnoticed; the seed is reported)
RESCORE_TOL = 1e-4  # max |diff| allowed: prediction.csv keeps 8 decimals; fp32 CPU/GPU noise ~1e-6
RESCORE_TOL_AMP = 2e-2  # when predict ran under bf16 autocast on CUDA (bf16 keeps ~3 digits)


def fixed_din_args(n_items: int, n_tags: int, net_dropout: float = 0.1) -> dict:
    """task2 model_args of the fixed DIN over an item table (frozen values, the run's dropout)."""
    fixed = fixed_din_config()
    return {"model": fixed["model"], "config": {**fixed["net"], "net_dropout": net_dropout},
            "max_len": fixed["train"]["max_len"], "seed": fixed["train"]["seed"],
            "n_items": n_items, "n_tags": n_tags}


def shapes(state: dict, n_items: int, n_tags: int) -> list:
    """[(name, shape with N_ITEMS+1 / N_TAGS as symbols, dtype)] of a state_dict, sorted by name."""
    sym = {n_items + 1: "N_ITEMS+1", n_tags: "N_TAGS"}
    out = []
    for name, t in sorted(state.items()):
        dims = [sym.get(int(d), int(d)) for d in getattr(t, "shape", ())]
        out.append((name, dims, str(getattr(t, "dtype", type(t).__name__))))
    return out


def fingerprint(model, n_items: int, n_tags: int) -> dict:
    """{"modules": [(name, type)], "state": shapes(...), "params": count, "sha256"}."""
    modules = [(name, type(m).__name__) for name, m in model.named_modules()]
    state = shapes(model.state_dict(), n_items, n_tags)
    doc = {"modules": modules, "state": state}
    sha = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return {**doc, "params": sum(p.numel() for p in model.parameters()), "sha256": sha}


def forward_fingerprint() -> list:
    """Logits of the fixed DIN (eval mode) on a fixed synthetic item table and batch, every
    parameter and buffer drawn from a fixed generator: pins what din.py computes, not only its
    shapes. Frozen in mmctr.tracks.FIXED_DIN_LOGITS."""
    import types

    import torch

    g = torch.Generator().manual_seed(20242025)
    n_items, n_tags = 40, 12
    tags = torch.randint(1, n_tags, (n_items + 1, 5), generator=g)
    tags[0] = 0
    emb = torch.randn(n_items + 1, 128, generator=g)
    emb[0] = 0
    items = types.SimpleNamespace(n_items=n_items, n_tags=n_tags, tags=tags, emb=emb)
    model = build_fixed_din(items)
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            if t.is_floating_point():
                value = torch.randn(t.shape, generator=g) * 0.1
                t.copy_(value.abs() + 0.5 if name.endswith("running_var") else value)
    model.eval()
    seq = torch.randint(1, n_items + 1, (6, 8), generator=g)
    seq[torch.arange(6).unsqueeze(1) > torch.arange(8).unsqueeze(0) + 2] = 0  # left padding...
    seq = seq.flip(1)  # ...most recent last
    batch = {"seq": seq, "item": torch.randint(1, n_items + 1, (6,), generator=g),
             "likes": torch.randint(0, 11, (6,), generator=g), "views": torch.randint(0, 11, (6,), generator=g)}
    with torch.no_grad():
        return [round(float(v), 6) for v in model(batch).reshape(-1)]


def build_fixed_din(items, net_dropout: float = 0.1):
    """The fixed DIN as the current task2 code builds it over `items` (a task2 ItemTable)."""
    from task2.models import create_model

    return create_model(fixed_din_args(items.n_items, items.n_tags, net_dropout), items.tags, items.emb,
                        derive=False)


def rescore(state: dict, items, test_path, seed: int, rows: int = RESCORE_ROWS) -> tuple:
    """(row indices, probabilities) of a sample of test rows (fixed by `seed`), from a checkpoint."""
    import torch

    from task2.checkpoint import model_from_state
    from task2.data import load_split
    from task2.predict import predict_split

    model = model_from_state(state, items, "the run's checkpoint")
    test = load_split(test_path, state["model_args"]["max_len"], items.n_items, need_label=False)
    n = len(test)
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(rows, n), replace=False))
    t = torch.from_numpy(idx)
    sub = dataclasses.replace(test, seq=test.seq[t], item=test.item[t], likes=test.likes[t],
                              views=test.views[t], label=None, lengths=test.lengths[t])
    with torch.no_grad():
        probs = predict_split(model, sub, 4096, torch.device("cpu"), False)
    return idx, np.asarray(probs, np.float64)


def main() -> None:
    """Print the fingerprint hash of the fixed DIN as the current code builds it."""
    import torch

    class _Items:  # any table: the fingerprint writes the item-table sizes as symbols
        n_items, n_tags = 1000, 57
        tags = torch.zeros(1001, 5, dtype=torch.long)
        tags[1, 0] = 56
        emb = torch.zeros(1001, 128)

    print(fingerprint(build_fixed_din(_Items()), _Items.n_items, _Items.n_tags)["sha256"])
    print(forward_fingerprint())


if __name__ == "__main__":
    main()

"""Checks the dev-only parity tests share (test_din_parity, test_momo_parity)."""
import numpy as np
import torch


def init_differences(fresh: dict, init: dict, name, who: str) -> list[str]:
    """How a fresh kit state dict (`fresh`, kit names -> tensors) departs from the other code's own
    initial state (`init`, its names via `name`): shapes, constants (biases, norms), padding rows
    that start at zero, and the spread of every random tensor (std within 0.8..1.25 of theirs)."""
    bad = []
    for kit_name, t in fresh.items():
        ref, v = init[name(kit_name)], t.numpy()
        if v.shape != ref.shape:
            bad.append(f"{kit_name}: shape {v.shape} vs {who} {ref.shape}")
        elif v.dtype.kind != "f":
            continue
        elif ref.std() == 0:  # biases, batch-norm / layer-norm parameters and statistics
            if not np.allclose(v, ref):
                bad.append(f"{kit_name}: {v.ravel()[:2]}... vs {who} constant {ref.ravel()[0]}")
        else:
            zero_rows = np.flatnonzero((ref == 0).all(axis=1)) if ref.ndim == 2 else []
            if len(zero_rows) and np.abs(v[zero_rows]).max() > 0:
                bad.append(f"{kit_name}: row(s) {zero_rows.tolist()} start at zero in {who} (padding), not here")
            live = np.setdiff1d(np.arange(len(ref)), zero_rows)
            ratio = v[live].std() / ref[live].std()
            if not 0.8 < ratio < 1.25:
                bad.append(f"{kit_name}: std {v[live].std():.3g} vs {who} {ref[live].std():.3g}")
    return bad


def randomize(model, rng) -> None:
    """Weights far from init so every part of the network moves the output (batch/layer norms
    included); padding rows zero (both frameworks keep them zero: padding_idx and no gradient)."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype == torch.long:
                continue
            if name.endswith("running_var"):
                val = rng.uniform(0.5, 1.5, size=t.shape)
            elif name.endswith(".weight") and t.dim() == 1:  # batch/layer-norm scale
                val = 1 + 0.2 * rng.normal(size=t.shape)
            elif t.dim() == 2 and "emb" in name or name in ("likes.weight", "views.weight"):
                val = 0.3 * rng.normal(size=t.shape)
            else:
                fan_in = t.shape[1] if t.dim() == 2 else 64
                val = rng.normal(size=t.shape) / np.sqrt(fan_in)
            t.copy_(torch.as_tensor(val, dtype=t.dtype))
        model.items.id_emb.weight[0] = 0
        model.items.tag_emb.weight[0] = 0

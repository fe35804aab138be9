"""Dev-only lockstep parity of the kit's `design: momo` config with the rank-1 solution's own code.

The peer is a checkout of pinskyrobin/WWW2025_MMCTR named by $MMCTR_PEER_MOMO; its
src/Transformer_DCN.py and src/mmctr_dataloader.py run unmodified in the FuxiCTR 2.3.7
environment (`make fuxictr-env`, or MMCTR_FUXICTR_PYTHON) by subprocess
(bench/peer_momo_runner.py). Skipped, with the reason, without either.

Same weights in both (the kit model's state dict under the peer's names, as .npz), same rows: a
kit-layout data folder converted by bench/bench_peer_momo.py; the kit reads it through its own
loader (task2.data, sequences trimmed per batch as in training), the peer through their
MMCTRDataLoader (the whole file width). Narrow widths (their class takes every width from the
params: the design is the same, not the 261M-parameter size). Eval mode (no dropout): logits,
probabilities and the BCE loss, the gradient of every parameter, and the weights after one
optimizer step (their train_step: clip at 10 + Adam, against the kit Trainer's train_step) must
agree; with the grad-free inference path as well.

What of theirs this pins, as they ran it (`momo_mask: as_run`):
- the mask defect: their loader's mask is 1 on real items and goes straight into PyTorch's
  src_key_padding_mask (True = ignore); a row with every position ignored (a full sequence) keeps
  its most recent one. The transformer then attends to padding only, and its outputs at real
  positions are zeroed before the last-k flatten and the max-pool. "Full" is over the file's
  width: a row as long as its batch's longest one is not full for them (the batch below holds such
  rows, shorter than max_len);
- item vector = [id, tags (masked mean), Linear(128, mm_dim) of the frozen embedding]; tokens =
  [sequence item ; target]; post-norm layers, no positions, no target token; DCN input = [likes,
  views, target, last-k outputs, Linear(max-pool)]; CrossNetV2 beside an MLP, head MLP over both;
- FuxiCTR's categorical features get padding_idx 0 and the raw levels are the ids: likes/views
  level 0 is a frozen row (its gradient is zero).
"""
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.io import read_parquet, write_parquet
from task1 import fuxictr_engine as FX
from task2.config import load_config
from task2.models import create_model
from task2.train import Trainer

from conftest import ROOT, load_script
from parity_checks import init_differences, randomize

PEER = load_script(ROOT / "bench" / "bench_peer_momo.py")
try:
    FX.fuxictr_python()
    PEER.peer_path()
    NO_ENV = None
except KitError as exc:
    NO_ENV = str(exc)
pytestmark = pytest.mark.skipif(NO_ENV is not None, reason=f"momo parity needs the peer code and FuxiCTR: {NO_ENV}")

WIDTHS = {"embedding_dim": 8, "tag_dim": 8, "mm_dim": 16, "ff_dim": 32, "last_k": 4, "cross_layers": 2,
          "dnn_hidden_units": [32, 16], "head_hidden_units": [8, 4]}
ROWS, MAX_LEN, LONGEST, STEP_BATCH = 40, 64, 20, 16


def craft_train(src, rng) -> pa.Table:
    """ROWS rows of a generated train split with the lengths that tell the masks apart: empty, one
    item, the batch's longest (LONGEST < MAX_LEN, several rows), the full MAX_LEN, and in between."""
    t = read_parquet(src).slice(0, ROWS)
    n_items = int(max(t.column(C.ITEM_ID).to_numpy().max(), 2))
    lengths = rng.integers(0, LONGEST, size=ROWS)
    lengths[:6] = [0, 1, LONGEST, LONGEST, LONGEST, LONGEST - 1]
    seqs = [[0] * (MAX_LEN - n) + rng.integers(1, n_items + 1, size=n).tolist() for n in lengths]
    likes = t.column(C.LIKES).to_numpy().copy()
    likes[:3] = 0  # level 0: FuxiCTR's padding row
    cols = {c: t.column(c) for c in t.column_names}
    cols[C.ITEM_SEQ] = pa.array(seqs, type=pa.list_(pa.int64()))
    cols[C.LIKES] = pa.array(likes)
    return pa.table(cols)


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    rng = np.random.default_rng(3)
    tmp = tmp_path_factory.mktemp("momo_parity")
    src = tmp / "src"
    shutil.copytree(tiny_data, src)
    write_parquet(src / C.TRAIN.relpath, craft_train(tiny_data / C.TRAIN.relpath, rng))
    data = tmp / "data"
    PEER.convert(src, data, n_valid=50, n_test=50, max_len=MAX_LEN)
    cfg = load_config("transformer_dcn_momo", {**WIDTHS, "momo_mask": "as_run", "device": "cpu", "num_threads": 1})

    trainer = Trainer(cfg, data, None, tmp / "kit", quiet=True)
    model = trainer.core
    randomize(model, rng)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    np.savez(tmp / "weights.npz", **PEER.kit_state_to_peer(model))
    params = PEER.peer_params(cfg, data, tmp / "peer", PEER.peer_path(), epochs=1)
    out = PEER.run_peer("parity", params, tmp / "peer", timeout=600,
                        extra=["--weights", tmp / "weights.npz", "--steps-batch", STEP_BATCH])
    with np.load(out, allow_pickle=False) as f:
        peer = {k: f[k] for k in f.files}

    batch = trainer.train.batch(torch.arange(ROWS))  # the kit's own loader: trimmed to the longest row
    model.eval()
    with torch.no_grad():
        nograd = torch.sigmoid(model(batch)).numpy()
    logits = model(batch)
    loss = F.binary_cross_entropy_with_logits(logits, batch["label"])
    model.zero_grad()
    loss.backward()
    grads = {PEER.peer_name(n): p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
    trainer.train_step(batch)  # the kit's step (zero_grad, BCE + regularisation, clip, Adam), still eval mode
    stepped = {PEER.peer_name(n): p.detach().numpy().copy() for n, p in model.named_parameters()}
    lock = Trainer(cfg, data, None, tmp / "kit_lockstep", quiet=True)  # a fresh optimizer, the same start
    lock.core.load_state_dict(start)
    lock.model.eval()
    losses = [float(lock.train_step(lock.train.batch(torch.arange(i, min(i + STEP_BATCH, ROWS)))))
              for i in range(0, ROWS, STEP_BATCH)]
    lockstep = {PEER.peer_name(n): p.detach().numpy().copy() for n, p in lock.core.named_parameters()}
    kit = {"logits": logits.detach().numpy(), "y_pred": torch.sigmoid(logits).detach().numpy(),
           "y_pred_nograd": nograd, "loss": loss.item(), "grads": grads, "step": stepped,
           "seq_width": batch["seq"].shape[1], "items": trainer.items,
           "lockstep_losses": np.array(losses), "lockstep": lockstep}
    return cfg, kit, peer


def test_batches_differ_in_width(run):
    """The kit trims its batch to the longest row; the peer's loader keeps the file's width."""
    _, kit, peer = run
    assert kit["seq_width"] == LONGEST and int(peer["seq_width"]) == MAX_LEN


def test_outputs_equal(run):
    _, kit, peer = run
    assert np.std(kit["logits"]) > 0.1  # the batch exercises the network, not a constant
    np.testing.assert_allclose(peer["logits"], kit["logits"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(peer["y_pred"], kit["y_pred"], atol=1e-5)
    np.testing.assert_allclose(peer["y_pred_nograd"], kit["y_pred_nograd"], atol=1e-5)
    np.testing.assert_allclose(float(peer["loss"]), kit["loss"], rtol=1e-5)


def _differ(ours: dict, theirs: dict, rtol: float, atol: float) -> list[str]:
    bad = []
    for name, v in ours.items():
        ref = theirs[name]
        diff = np.abs(ref - v) > rtol * max(np.abs(ref).max(), 1e-8) + atol
        if diff.any():
            bad.append(f"{name}: {int(diff.sum())} of {diff.size} entries, max |diff| {np.abs(ref - v).max():.3g}")
    return bad


def test_gradients_equal(run):
    """The gradient of every parameter (catches frozen padding rows and the mask's zeroed positions)."""
    _, kit, peer = run
    theirs = {k.removeprefix("grad/"): v for k, v in peer.items() if k.startswith("grad/")}
    assert sorted(theirs) == sorted(kit["grads"])
    assert not np.abs(theirs[PEER.peer_name("likes.weight")][0]).any()  # level 0 frozen in theirs
    bad = _differ(kit["grads"], theirs, rtol=1e-4, atol=1e-7)
    assert not bad, "gradients differ:\n" + "\n".join(bad)


def _adam_differences(ours: dict, theirs: dict, grads: dict, lr: float, slack: float,
                      steps: int = 1) -> tuple[list[str], int]:
    """Where weights after `steps` Adam steps differ by more than `slack` x lr, over the entries whose
    gradient on the whole batch is decided (above 1e-3 of its tensor's largest); the others (noise
    gradients, a noise sign each step) by at most 2.5 lr per step."""
    bad, decided = [], 0
    for name, v in ours.items():
        g = np.abs(grads[name]) if name in grads else np.zeros_like(v)
        keep = g > 1e-3 * max(g.max(), 1e-12)
        decided += int(keep.sum())
        diff = np.abs(theirs[name] - v)
        if (diff[keep] > slack * lr).any():
            bad.append(f"{name}: {int((diff[keep] > slack * lr).sum())} of {int(keep.sum())} entries, "
                       f"max |diff| {diff[keep].max():.3g}")
        if (diff[~keep] > 2.5 * lr * steps).any():
            bad.append(f"{name}: an entry with a noise gradient moved apart by more than 2.5 lr per step")
    return bad, decided


def test_one_optimizer_step_equal(run):
    """After one clipped Adam step from the same weights, the weights agree. Adam's first step moves
    each weight by lr * g / (|g| + eps): where a gradient is rounding noise (|g| below 1e-3 of its
    tensor's largest, e.g. the attention's queries and keys over identical padding tokens, whose
    softmax has no gradient) its sign is noise too, so those entries are left out, and counted."""
    cfg, kit, peer = run
    theirs = {k.removeprefix("step/"): v for k, v in peer.items() if k.startswith("step/")}
    grads = {k.removeprefix("grad/"): v for k, v in peer.items() if k.startswith("grad/")}
    assert sorted(theirs) == sorted(kit["step"])
    bad, decided = _adam_differences(kit["step"], theirs, grads, cfg.train.learning_rate, slack=1e-2)
    assert decided > 0.5 * sum(v.size for v in kit["step"].values())
    assert not bad, "weights after one step differ:\n" + "\n".join(bad)


def test_lockstep_steps_equal(run):
    """A fresh optimizer each side, the same start, the rows in order in batches of STEP_BATCH:
    every step's loss and the weights at the end agree (Adam's state carried across the steps)."""
    cfg, kit, peer = run
    assert len(kit["lockstep_losses"]) == -(-ROWS // STEP_BATCH)
    np.testing.assert_allclose(peer["lockstep_losses"], kit["lockstep_losses"], rtol=1e-4)
    theirs = {k.removeprefix("lockstep/"): v for k, v in peer.items() if k.startswith("lockstep/")}
    grads = {k.removeprefix("grad/"): v for k, v in peer.items() if k.startswith("grad/")}
    bad, _ = _adam_differences(kit["lockstep"], theirs, grads, cfg.train.learning_rate, slack=5e-2,
                               steps=len(kit["lockstep_losses"]))
    assert not bad, f"weights after {len(kit['lockstep_losses'])} steps differ:\n" + "\n".join(bad)


def test_initialisation_structure(run):
    """A fresh kit momo model starts as their model does under FuxiCTR: exactly-nn.Linear weights
    xavier_normal, biases 0, the attention's projections PyTorch's own, embedding tables N(0, 1e-4)
    with zero padding rows, layer norms at 1 / 0."""
    cfg, kit, peer = run
    init = {k.removeprefix("init/"): v for k, v in peer.items() if k.startswith("init/")}
    torch.manual_seed(0)
    fresh = create_model(cfg, kit["items"].tags, kit["items"].emb).state_dict()
    bad = init_differences(fresh, init, PEER.peer_name, "theirs")
    assert not bad, "initialisation differs from theirs:\n" + "\n".join(bad)

"""Dev-only parity of the kit's DIN with the organisers' DIN on FuxiCTR 2.3.7.

The same weights go into both (the kit's task2 DIN here, FuxiCTR's in its own environment by
subprocess, exchanged as .npz), the same batch runs in eval mode: logits, probabilities, the
regularisation term and the gradient of (BCE + regularisation) must agree, and the kit's fresh
initialisation must have FuxiCTR's structure. Skipped without `make fuxictr-env`
(or MMCTR_FUXICTR_PYTHON pointing at a python with fuxictr 2.3.7).

What FuxiCTR 2.3.7 does that these checks pin (rank_model.py, feature_embedding.py,
feature_processor.py): every categorical feature gets padding_idx 0, and with
rebuild_dataset=False the raw likes/views levels are the ids, so level 0 is a frozen zero
vector; the net regulariser covers every parameter outside FeatureEmbeddingDict (biases and
batch-norm too); Linear weights xavier_normal, biases 0, embedding rows N(0, 1e-4).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from parity_checks import init_differences, randomize

from mmctr.errors import KitError
from mmctr.item_info import write_item_info
from task1 import fuxictr_engine as FX
from task2.config import load_config
from task2.models import create_model
from task2.train import regularization

try:
    FX.fuxictr_python()
    NO_ENV = None
except KitError as exc:
    NO_ENV = str(exc)
pytestmark = pytest.mark.skipif(NO_ENV is not None, reason=f"FuxiCTR parity needs its environment: {NO_ENV}")

N_ITEMS, N_TAGS, BATCH, MAX_LEN = 60, 25, 24, 64
fuxictr_name, dnn_columns, to_fuxictr = FX.fuxictr_name, FX.dnn_columns, FX.to_fuxictr


def make_items(path, rng):
    tags = rng.integers(1, N_TAGS, size=(N_ITEMS + 1, 5))
    tags[rng.random(tags.shape) < 0.4] = 0  # padded tag slots
    tags[5] = 0  # an item without tags
    tags[N_ITEMS // 2, 0] = N_TAGS - 1  # the largest tag id is used
    emb = rng.normal(size=(N_ITEMS + 1, 128)).astype(np.float32)
    write_item_info(path, tags, emb)
    tags[0], emb[0] = 0, 0
    return torch.from_numpy(tags), torch.from_numpy(emb)


def make_batch(rng, longest: int = MAX_LEN) -> dict:
    lengths = rng.integers(0, longest + 1, size=BATCH)
    lengths[:3] = [0, 1, longest]  # empty history, one item, the longest
    seq = np.zeros((BATCH, MAX_LEN), dtype=np.int64)
    for i, n in enumerate(lengths):
        seq[i, MAX_LEN - n:] = rng.integers(1, N_ITEMS + 1, size=n)
    likes, views = rng.integers(0, 11, size=BATCH), rng.integers(0, 11, size=BATCH)
    likes[:2], views[:2] = 0, 0  # level 0 is in the data
    return {"item_seq": seq, "item_id": rng.integers(1, N_ITEMS + 1, size=BATCH),
            "likes_level": likes, "views_level": views,
            "label": (rng.random(BATCH) < 0.4).astype(np.float32)}


def run_both(tmp_path, overrides: dict, seed: int = 7, longest: int = MAX_LEN):
    rng = np.random.default_rng(seed)
    cfg = load_config("din_baseline", overrides)
    info = tmp_path / "item_info.parquet"
    tags, emb = make_items(info, rng)
    model = create_model(cfg, tags, emb)
    randomize(model, rng)
    batch = make_batch(rng, longest)
    perm = dnn_columns(model.items.out_dim, cfg["embedding_dim"])
    np.savez(tmp_path / "weights.npz", **FX.kit_state_to_fuxictr(model, cfg["embedding_dim"]))
    np.savez(tmp_path / "batch.npz", **batch)
    dataset, model_cfg = FX.fuxictr_config(cfg, tmp_path / "train.parquet", tmp_path / "valid.parquet", info,
                                           N_ITEMS, int(tags.max()) + 1, tmp_path / "fx", max_epochs=1,
                                           num_threads=1)
    config_dir = FX.write_fuxictr_config(tmp_path / "fx" / "config", dataset, model_cfg)
    FX.run_runner("parity", config_dir, tmp_path / "out.npz", quiet=True,
                  extra=["--weights", tmp_path / "weights.npz", "--batch", tmp_path / "batch.npz"])
    with np.load(tmp_path / "out.npz", allow_pickle=False) as f:
        fx = {k: f[k] for k in f.files}

    model.eval()
    kit_batch = {"seq": torch.from_numpy(batch["item_seq"]), "item": torch.from_numpy(batch["item_id"]),
                 "likes": torch.from_numpy(batch["likes_level"]), "views": torch.from_numpy(batch["views_level"])}
    logits = model(kit_batch)
    reg = regularization(model, cfg)
    loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(batch["label"])) + reg
    model.zero_grad()
    loss.backward()
    grads = {fuxictr_name(n): to_fuxictr(n, p.grad.numpy(), perm)
             for n, p in model.named_parameters() if p.grad is not None}
    kit = {"logits": logits.detach().numpy(), "y_pred": torch.sigmoid(logits).detach().numpy(),
           "regularization": float(reg.detach()), "loss": float(loss.detach()), "grads": grads}
    return cfg, model, kit, fx


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return run_both(tmp_path_factory.mktemp("parity"), {})


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    """The organisers' tuner point (dropout 0.1 adds layers) with a net regulariser on."""
    return run_both(tmp_path_factory.mktemp("parity_tuned"),
                    {"net_dropout": 0.1, "batch_size": 8192, "embedding_regularizer": 1e-6,
                     "net_regularizer": 1e-3})


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """Every sequence of the batch at most 9 long: the runner trims the all-padding columns."""
    return run_both(tmp_path_factory.mktemp("parity_short"), {}, longest=9)


def test_runner_trims_padding_columns(default_run, short_run):
    assert int(default_run[3]["seq_width"]) == MAX_LEN
    assert int(short_run[3]["seq_width"]) == 9


RUNS = ["default_run", "tuned_run", "short_run"]


@pytest.mark.parametrize("run", RUNS)
def test_outputs_equal(run, request):
    _, _, kit, fx = request.getfixturevalue(run)
    assert np.std(kit["logits"]) > 0.1  # the batch exercises the network, not a constant
    np.testing.assert_allclose(fx["logits"], kit["logits"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(fx["y_pred"], kit["y_pred"], atol=1e-5)


@pytest.mark.parametrize("run", RUNS)
def test_regularization_equal(run, request):
    cfg, _, kit, fx = request.getfixturevalue(run)
    assert kit["regularization"] > 0
    np.testing.assert_allclose(float(fx["regularization"]), kit["regularization"], rtol=1e-5)


@pytest.mark.parametrize("run", RUNS)
def test_gradients_equal(run, request):
    """One training step's gradient, parameter by parameter (catches frozen padding rows)."""
    _, _, kit, fx = request.getfixturevalue(run)
    fx_grads = {k.removeprefix("grad/"): v for k, v in fx.items() if k.startswith("grad/")}
    assert sorted(fx_grads) == sorted(kit["grads"])
    bad = []
    for name, g in kit["grads"].items():
        ref = fx_grads[name]
        diff = np.abs(ref - g) > 1e-4 * max(np.abs(ref).max(), 1e-8) + 1e-7
        if diff.any():
            where = (f"rows {sorted(set(np.nonzero(diff)[0].tolist()))[:5]}" if diff.ndim == 2
                     else f"{int(diff.sum())} of {diff.size} entries")
            bad.append(f"{name}: {where}, max |diff| {np.abs(ref - g).max():.3g}")
    assert not bad, "gradients differ:\n" + "\n".join(bad)


def test_initialisation_structure(default_run):
    """A fresh kit DIN starts as FuxiCTR's does: xavier_normal Linear weights, zero biases,
    N(0, 1e-4) embedding tables with zero padding rows."""
    cfg, _, _, fx = default_run
    init = {k.removeprefix("init/"): v for k, v in fx.items() if k.startswith("init/")}
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tags = torch.from_numpy(rng.integers(0, N_TAGS, size=(N_ITEMS + 1, 5)))
    tags[N_ITEMS // 2, 0] = N_TAGS - 1
    fresh = create_model(cfg, tags, torch.zeros(N_ITEMS + 1, 128)).state_dict()
    bad = init_differences(fresh, init, fuxictr_name, "FuxiCTR")
    assert not bad, "initialisation differs from FuxiCTR 2.3.7:\n" + "\n".join(bad)

"""task2 keeps FuxiCTR 2.3.7's training semantics: L2 = (lambda/2)||w||^2, improvement > 1e-6, lr floor 1e-6."""
import pytest
import torch

from task2.config import load_config
from task2.train import MIN_LR, Trainer, regularization


@pytest.fixture
def trainer(tiny_data, tmp_path):
    cfg = load_config("din_baseline", {"batch_size": 256, "max_epochs": 5, "num_threads": 1,
                                       "embedding_regularizer": 1e-2, "net_regularizer": 1e-3,
                                       "lr_decay_factor": 0.1, "early_stop_patience": 2})
    t = Trainer(cfg, tiny_data, None, tmp_path / "r", quiet=True)
    t.train_seconds, t.samples_per_s = 1.0, [1.0]
    return t


def test_l2_is_half_lambda_times_the_squared_norm(trainer):
    model = trainer.core
    emb = model.embedding_parameters()
    ids = {id(p) for p in emb}
    # FuxiCTR 2.3.7 regularization_loss: net_regularizer on every trainable parameter outside the
    # embedding set, biases and batch norm included
    net = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    assert any(p.dim() == 1 for p in net)  # biases / batch norm are in
    with torch.no_grad():
        for p in net:
            if p.dim() == 1:
                p.add_(0.5)  # zero-initialised biases would hide a missing term
    want = 1e-2 / 2 * sum(float(p.detach().pow(2).sum()) for p in emb) + \
        1e-3 / 2 * sum(float(p.detach().pow(2).sum()) for p in net)
    assert float(regularization(model, trainer.cfg)) == pytest.approx(want, rel=1e-5)
    assert {id(model.likes.weight), id(model.items.mm_proj.weight)} <= ids  # as FuxiCTR's embedding layer


def test_gain_below_1e_6_is_no_gain_and_lr_floors_at_1e_6(trainer):
    for g in trainer.opt.param_groups:
        g["lr"] = 3e-6
    trainer.best_auc = 0.7
    stop = trainer.checkpoint_and_earlystop(0, 0.5, 100, 0.7 + 5e-7, 0.6)
    assert not stop and trainer.bad_evals == 1 and trainer.best_epoch == -1
    assert trainer.opt.param_groups[0]["lr"] == MIN_LR == 1e-6  # 3e-7 floored
    assert not (trainer.out / "best.pt").exists()
    stop = trainer.checkpoint_and_earlystop(1, 0.5, 100, 0.7 + 2e-6, 0.6)
    assert not stop and trainer.bad_evals == 0 and trainer.best_epoch == 2 and (trainer.out / "best.pt").exists()
    assert trainer.opt.param_groups[0]["lr"] == 1e-6  # unchanged on a gain
    trainer.checkpoint_and_earlystop(2, 0.5, 100, 0.5, 0.6)
    assert trainer.checkpoint_and_earlystop(3, 0.5, 100, 0.5, 0.6)  # patience 2 reached: stop


def test_fixed_din_trains_as_fuxictr(trainer):
    """Levels get padding row 0 (FuxiCTR's padding_idx 0) and rows are shuffled uniformly."""
    din = trainer.core
    assert din.likes.padding_idx == 0 and din.views.padding_idx == 0
    assert float(din.likes.weight[0].abs().sum()) == 0.0
    assert din.length_bucketing is False

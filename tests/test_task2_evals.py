"""evals_per_epoch: validation inside the epoch (FuxiCTR's eval_steps), fractional epochs in the
history, early stop and lr decay per validation, and a resume from a mid-epoch checkpoint."""
import json
import shutil

import pytest
import torch

from mmctr.errors import KitError
from mmctr.runs import epoch_number, epochs_run, read_history
from mmctr.rundir import load_checkpoint
from task2.config import load_config
from task2.train import Trainer, eval_marks, train_model

TWO_EVALS = {"batch_size": 512, "max_epochs": 2, "num_threads": 1, "evals_per_epoch": 2}


def test_eval_marks_spread_validations_and_end_on_the_epoch():
    assert eval_marks(59, 1) == {59: 1.0}
    assert eval_marks(59, 4) == {15: 0.25, 30: 0.5, 44: 0.75, 59: 1.0}
    assert eval_marks(2, 4) == {1: 0.25, 2: 0.5} | {2: 1.0}  # fewer steps than validations
    assert list(eval_marks(1, 3)) == [1] and eval_marks(1, 3)[1] == 1.0


def test_evals_per_epoch_is_a_checked_training_key():
    assert load_config("transformer_dcn_small").train.evals_per_epoch >= 1
    with pytest.raises(KitError, match="evals_per_epoch"):
        load_config("transformer_dcn_small", {"evals_per_epoch": 0})
    assert "evals_per_epoch" in load_config("din_baseline", {"evals_per_epoch": 3}).learned()


@pytest.fixture(scope="module")
def two_evals(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("evals") / "run"
    summary = train_model(load_config("transformer_dcn_small", {**TWO_EVALS, "early_stop_patience": 10}),
                          tiny_data, None, out, quiet=True)
    return out, summary


def test_history_has_a_row_per_validation_with_fractional_epochs(two_evals):
    out, summary = two_evals
    hist = summary["history"]
    assert [h["epoch"] for h in hist] == [0.5, 1, 1.5, 2]
    assert read_history(out) == hist and epochs_run(hist) == 2
    assert all(h["samples_per_s"] > 0 and h["train_seconds"] > 0 for h in hist)
    best = max(hist, key=lambda h: h["valid_auc"])
    assert summary["best_epoch"] == best["epoch"] and summary["best_valid_auc"] == best["valid_auc"]
    state = load_checkpoint(out / "best.pt", sha256=json.loads((out / "manifest.json").read_text())
                            ["checkpoint"]["sha256"])
    assert state["epoch"] == best["epoch"]
    # the last validation is the epoch's end: last.pt resumes at the next epoch, not inside one
    assert "steps_done" not in torch.load(out / "last.pt", weights_only=True)


def _bare_trainer(cfg, data, out, resume: bool = False) -> Trainer:
    """A Trainer ready for checkpoint_and_earlystop without a training pass."""
    t = Trainer(cfg, data, None, out, quiet=True, resume=resume)
    t.train_seconds, t.samples_per_s, t.epoch_generator = 1.0, [1.0], t.gen.get_state()
    return t


def test_lr_decays_and_patience_counts_per_validation(tiny_data, tmp_path):
    cfg = load_config("transformer_dcn_small", {**TWO_EVALS, "early_stop_patience": 2, "lr_decay_factor": 0.1})
    t = _bare_trainer(cfg, tiny_data, tmp_path / "r")
    assert not t.checkpoint_and_earlystop(0, 0.5, 100, 0.70, 0.6, at=(0.5, 10, 20))
    assert t.best_epoch == 0.5 and t.opt.param_groups[0]["lr"] == 1e-3
    assert not t.checkpoint_and_earlystop(0, 0.5, 100, 0.69, 0.6)  # the epoch's end, no gain
    assert t.opt.param_groups[0]["lr"] == pytest.approx(1e-4)  # decayed after one validation
    assert t.checkpoint_and_earlystop(1, 0.5, 100, 0.69, 0.6, at=(0.5, 10, 20))  # patience 2: stop at 1.5
    assert [h["epoch"] for h in t.history] == [0.5, 1, 1.5]
    last = torch.load(t.out / "last.pt", weights_only=True)
    assert (last["epoch"], last["steps_done"]) == (1, 10)  # inside the second epoch


def test_a_gain_keeps_the_rate(tiny_data, tmp_path):
    cfg = load_config("transformer_dcn_small", {**TWO_EVALS, "early_stop_patience": 10, "lr_decay_factor": 0.1})
    t = _bare_trainer(cfg, tiny_data, tmp_path / "r")
    for epoch, auc in enumerate([0.70, 0.69, 0.72, 0.73]):
        assert not t.checkpoint_and_earlystop(epoch, 0.5, 100, auc, 0.6)
    assert t.opt.param_groups[0]["lr"] == pytest.approx(1e-4)  # FuxiCTR: decayed once, on the no-gain


def _killed_after(validations: int, cfg, data, run, monkeypatch) -> None:
    """Train until `validations` rows are in the history, then die as a killed process would."""
    real_step = Trainer.train_step

    def step(self, batch):
        if len(self.history) == validations:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", step)
    with pytest.raises(KeyboardInterrupt):
        train_model(cfg, data, None, run, quiet=True)
    monkeypatch.setattr(Trainer, "train_step", real_step)


def test_resume_after_a_mid_epoch_stop_equals_uninterrupted(two_evals, tiny_data, tmp_path, monkeypatch):
    _, full = two_evals
    cfg = load_config("transformer_dcn_small", {**TWO_EVALS, "early_stop_patience": 10, "lr_decay_factor": 0.1})
    run = tmp_path / "r"
    _killed_after(3, cfg, tiny_data, run, monkeypatch)  # during the second half of epoch 2
    assert [h["epoch"] for h in read_history(run)] == [0.5, 1, 1.5]
    resumed = train_model(cfg, tiny_data, None, run, quiet=True, resume=True)
    assert [h["epoch"] for h in resumed["history"]] == [0.5, 1, 1.5, 2]
    for a, b in zip(resumed["history"], full["history"]):  # one thread: bit for bit
        assert (a["train_loss"], a["valid_auc"], a["lr"]) == (b["train_loss"], b["valid_auc"], b["lr"])
    assert json.loads((run / "manifest.json").read_text())["resumed"][0]["from_epoch"] == 1.5


def test_epoch_numbers_print_whole_epochs_as_integers():
    assert epoch_number(2.0) == 2 and isinstance(epoch_number(2.0), int)
    assert epoch_number("1.25") == 1.25
    with pytest.raises(ValueError):
        epoch_number("nan")


def test_fixed_din_freezes_one_validation_per_epoch():
    from mmctr.tracks import fixed_din_config
    from task1.fuxictr_engine import FIXED

    assert fixed_din_config()["train"]["evals_per_epoch"] == 1 and FIXED["evals_per_epoch"] == 1


def test_results_csv_keeps_a_fractional_best_epoch(two_evals, tmp_path):
    from mmctr.runs import append_result, read_results, record_train

    out, summary = two_evals
    run = shutil.copytree(out, tmp_path / "runs" / "r")
    record_train(run, "task1_2", 1.0, runs_root=tmp_path / "runs")  # 4 validations, 2 epochs
    append_result(tmp_path / "runs", kind="train", track="task1_2", model="din", epochs=3, best_epoch=1.25)
    first, second = read_results(tmp_path / "runs")
    assert (first["epochs"], first["best_epoch"]) == (2, summary["best_epoch"])
    assert (second["epochs"], second["best_epoch"]) == (3, 1.25)

"""Round 3 probes of restore_best_on_no_gain (commit 94f97cf): the rule check of the fixed DIN,
--resume with crafted best.pt / manifest files, and the semantics of going back to the best weights."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from mmctr.errors import KitError
from mmctr.io import file_sha256
from mmctr.runs import read_history
from submission import layout as L
from task2.checkpoint import load_checkpoint
from task2.config import load_config
from task2.train import Trainer, train_model
from test_submission_integrity import clean_code, data, edit, make_run, run1, run_check  # noqa: F401 - fixtures
from test_task2_evals import (TWO_EVALS, _bare_trainer, _killed_after, _overfit, _same, _tamper, _tamper_last,
                              _weights)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)
KEY = "restore_best_on_no_gain"
RESTORE = {**TWO_EVALS, "early_stop_patience": 10, KEY: True}


def _fixed_din_violations(runs, data, clean_code) -> list:
    report = run_check(runs, data, "task1", clean_code)
    return [v for v in report.violations if v.rule == "fixed-din"]


# ------------------------------------------------------------------ 1. rule check, fixed DIN

@pytest.mark.parametrize("value", [True, "true", "True", 1, "yes", None, [False], {"on": False}])
def test_rule_check_flags_any_restore_value_but_false(run1, data, clean_code, value):
    edit(L.RunLayout.of(run1).task2_manifest, lambda d: d["config"].update({KEY: value}))
    assert any(KEY in v.where for v in _fixed_din_violations(run1, data, clean_code))


@pytest.mark.parametrize("new_name", [None, "restore_best", "Restore_Best_On_No_Gain", "restore_best_on_no_gain "])
def test_rule_check_flags_a_missing_or_renamed_restore_key(run1, data, clean_code, new_name):
    def rename(d):
        d["config"].pop(KEY)
        if new_name:
            d["config"][new_name] = True
    edit(L.RunLayout.of(run1).task2_manifest, rename)
    where = [v.where for v in _fixed_din_violations(run1, data, clean_code)]
    assert any(w.endswith(f"config.{KEY}") for w in where)  # missing
    if new_name:
        assert any(w.endswith(f"config.{new_name}") for w in where)  # not a key of the fixed DIN


@pytest.fixture(scope="module")
def din_restored_then_resumed(data, tmp_path_factory):
    """The fixed DIN trained with restore on, then `--resume`d with the frozen values and no epoch
    left to train: the kit's own manifest of a run that bent the rule."""
    out = tmp_path_factory.mktemp("din") / "task2"
    over = {"batch_size": 256, "num_threads": 1, "max_epochs": 1}
    train_model(load_config("din_baseline", {**over, KEY: True}), data, None, out, quiet=True)
    train_model(load_config("din_baseline", over), data, None, out, quiet=True, resume=True)
    return json.loads((out / "manifest.json").read_text())


def test_resume_to_the_frozen_values_does_not_hide_a_bent_rule(din_restored_then_resumed, data, tmp_path,
                                                               clean_code):
    """The final config reads the frozen values; `resumed` records that the DIN trained with restore
    on. The rule check must read that record (it did not: the run passed)."""
    m = din_restored_then_resumed
    assert m["config"][KEY] is False
    assert m["resumed"][-1]["changed"] == {KEY: [True, False]}
    runs = make_run(tmp_path, data, "task1", config=m["config"])
    assert run_check(runs, data, "task1", clean_code).ok  # the same config without the record passes
    edit(L.RunLayout.of(runs).task2_manifest, lambda d: d.update(resumed=m["resumed"]))
    assert any(v.where.endswith(f"resumed.{KEY}") for v in _fixed_din_violations(runs, data, clean_code))


@pytest.mark.parametrize("key, old, new", [("lr_anneal_after_plateau", True, False),
                                           ("lr_decay_factor", 0.5, 0.1),
                                           ("early_stop_patience", 10, 3),
                                           ("grad_clip_norm", 0.0, 10.0),
                                           (KEY, "true", False)])
def test_rule_check_flags_a_frozen_key_changed_on_resume(run1, data, clean_code, key, old, new):
    edit(L.RunLayout.of(run1).task2_manifest,
         lambda d: d.update(resumed=[{"from_epoch": 2, "changed": {key: [old, new]}}]))
    assert any(v.where.endswith(f"resumed.{key}") for v in _fixed_din_violations(run1, data, clean_code))


def test_rule_check_warns_of_a_tunable_key_changed_on_resume(run1, data, clean_code):
    """One of the five keys changed mid-run is a hand-made schedule, not a tuned value: a warning."""
    edit(L.RunLayout.of(run1).task2_manifest, lambda d: d.update(resumed=[
        {"from_epoch": 2, "changed": {"learning_rate": [1e-3, 1e-4]}}, {"from_epoch": 3, "changed": {}}]))
    report = run_check(run1, data, "task1", clean_code)
    assert report.ok
    assert [w.where.rsplit(":", 1)[-1] for w in report.warnings if w.rule == "fixed-din"] == ["resumed.learning_rate"]


@pytest.mark.parametrize("resumed", ["lr_decay_factor", [1], [{"changed": [KEY]}]])
def test_rule_check_flags_an_unreadable_resume_record(run1, data, clean_code, resumed):
    edit(L.RunLayout.of(run1).task2_manifest, lambda d: d.update(resumed=resumed))
    assert any(v.where.endswith("resumed") for v in _fixed_din_violations(run1, data, clean_code))


@pytest.mark.parametrize("value", [True, "true", 1, "yes", "on"])
def test_fuxictr_engine_refuses_restore(value, tmp_path):
    import task1.fuxictr_engine as FX

    args = ("t", "v", "i", 10, 5, tmp_path, 1)
    with pytest.raises(KitError, match=KEY):  # a non-bool is refused at load, True by the engine
        FX.fuxictr_config(load_config("din_baseline", {KEY: value}), *args)
    flat = {**load_config("din_baseline").to_flat(), KEY: value}  # an already flat dict is not coerced
    with pytest.raises(KitError, match=KEY):
        FX.fuxictr_config(flat, *args)


def test_task1_evaluate_refuses_restore_for_either_engine():
    from task1.evaluate import din_config

    for sets in ([f"{KEY}=true"], [f"{KEY}=false"], [f"{KEY.upper()}=1"]):
        with pytest.raises(KitError, match="the Task-1 track fixes the DIN"):
            din_config(sets)
    assert din_config(["learning_rate=1e-4"]).train.restore_best_on_no_gain is False


# ------------------------------------------------------------------ 2. --resume with crafted files

@pytest.fixture()
def restore_run(tiny_data, tmp_path):
    """A run with best.pt and last.pt after one validation (a gain), started with restore off and
    resumed with it on: last.pt has no copy of the best weights, so the resume reads best.pt."""
    run = tmp_path / "r"
    off = load_config("transformer_dcn_small", {**RESTORE, KEY: False})
    _bare_trainer(off, tiny_data, run).checkpoint_and_earlystop(0, 0.5, 100, 0.70, 0.6, at=(0.5, 1, 2))
    assert "best_model" not in torch.load(run / "last.pt", weights_only=True)
    return load_config("transformer_dcn_small", RESTORE), run


def _one_line_error(cfg, data, run, match: str) -> None:
    with pytest.raises(KitError, match=match) as exc:
        Trainer(cfg, data, None, run, quiet=True, resume=True)
    assert "\n" not in str(exc.value)


def _first(state):
    return next(iter(state["model"]))


@pytest.mark.parametrize("change, match", [
    (lambda s: s.update(model=torch.zeros(3)), "holds no model weights"),
    (lambda s: s.update(model=[1, 2]), "holds no model weights"),
    (lambda s: s.pop("model"), "holds no model weights"),
    (lambda s: s["model"].update({_first(s): torch.zeros(1)}), "does not fit this model"),
    (lambda s: s["model"].pop(_first(s)), "does not fit this model"),
    (lambda s: s["model"].update({"evil.weight": torch.zeros(2)}), "does not fit this model"),
    (lambda s: s["model"].update({_first(s): 3}), "does not fit this model"),
    (lambda s: s["model"].update({_first(s): torch.zeros(1).expand(2**40)}), "does not fit this model"),
])
def test_resume_refuses_a_repinned_best_pt_that_is_not_this_models(restore_run, tiny_data, change, match):
    cfg, run = restore_run
    _tamper(run, "best.pt", change)
    _one_line_error(cfg, tiny_data, run, rf"best\.pt.*{match}")


@pytest.mark.parametrize("value, match", [
    (torch.zeros(3), "holds no model weights"),
    ([1, 2], "holds no model weights"),
    ({"evil.weight": torch.zeros(2)}, "does not fit this model"),
])
def test_resume_refuses_a_crafted_best_copy_in_last_pt(tiny_data, tmp_path, value, match):
    """With restore on from the start last.pt carries the best weights; a re-pinned last.pt whose
    copy is not this model's is one line."""
    run = tmp_path / "r"
    cfg = load_config("transformer_dcn_small", RESTORE)
    _bare_trainer(cfg, tiny_data, run).checkpoint_and_earlystop(0, 0.5, 100, 0.70, 0.6, at=(0.5, 1, 2))
    assert "best_model" in torch.load(run / "last.pt", weights_only=True)
    _tamper_last(run, "best_model", value)
    (run / "best.pt").unlink()  # not read: last.pt's copy is the one
    _one_line_error(cfg, tiny_data, run, rf"last\.pt \(best_model\).*{match}")


def test_resume_never_unpickles_a_repinned_best_pt(restore_run, tiny_data, tmp_path):
    cfg, run = restore_run
    pwned = tmp_path / "pwned"
    (run / "best.pt").write_bytes(b"cos\nsystem\n(S'touch " + str(pwned).encode() + b"'\ntR.")
    edit(run / "manifest.json", lambda m: m["checkpoint"].update(sha256=file_sha256(run / "best.pt")))
    _one_line_error(cfg, tiny_data, run, "not a plain-data checkpoint")
    assert not pwned.exists()


def test_resume_with_best_pt_missing_is_one_line(restore_run, tiny_data):
    cfg, run = restore_run
    (run / "best.pt").unlink()
    _one_line_error(cfg, tiny_data, run, r"checkpoint not found: .*best\.pt")


@pytest.mark.parametrize("entry", ["checkpoint", "last_checkpoint"])
@pytest.mark.parametrize("value", [None, "best.pt", ["best.pt"], {"sha256": 123}, {"sha256": ["a"]}, {"path": "x"}])
def test_resume_with_a_crafted_checkpoint_pin_is_one_line(restore_run, tiny_data, entry, value):
    """The manifest is the participant's file: a pin that is not {"sha256": "<hex>"} is refused in
    one line (a string gave AttributeError, a number TypeError)."""
    cfg, run = restore_run
    edit(run / "manifest.json", lambda m: m.update({entry: value}))
    _one_line_error(cfg, tiny_data, run, r"(records no sha256|sha256 .* differs)")


@pytest.mark.parametrize("doc", [[], "best.pt", 3])
def test_resume_with_a_manifest_that_is_not_an_object_is_one_line(restore_run, tiny_data, doc):
    cfg, run = restore_run
    (run / "manifest.json").write_text(json.dumps(doc))
    _one_line_error(cfg, tiny_data, run, "not a run manifest")


def test_cli_resume_with_a_crafted_pin_prints_one_error_line(restore_run, tiny_data):
    cfg, run = restore_run
    edit(run / "manifest.json", lambda m: m.update(checkpoint="best.pt"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    r = subprocess.run([sys.executable, "-m", "task2", "train", "--data-dir", str(tiny_data), "--config",
                        "transformer_dcn_small", "--out", str(run), "--resume", "--max-epochs", "2",
                        "--set", "batch_size=512", "--set", "evals_per_epoch=2", "--set", "num_threads=1",
                        "--set", "early_stop_patience=10"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "records no sha256 for best.pt" in r.stderr


def test_resume_true_to_false_stops_restoring_and_needs_no_best_pt(tiny_data, tmp_path):
    cfg = load_config("transformer_dcn_small", RESTORE)
    run = tmp_path / "r"
    t = _bare_trainer(cfg, tiny_data, run)
    t.checkpoint_and_earlystop(0, 0.5, 100, 0.70, 0.6, at=(0.5, 1, 2))
    _overfit(t)
    t.checkpoint_and_earlystop(0, 0.5, 100, 0.69, 0.6)  # restored
    (run / "best.pt").unlink()  # off: best.pt is not read
    off = load_config("transformer_dcn_small", {**RESTORE, KEY: False})
    r = _bare_trainer(off, tiny_data, run, resume=True)
    assert r.best_weights is None and r.resumed[-1]["changed"] == {KEY: [True, False]}
    _overfit(r)
    fell = _weights(r)
    r.checkpoint_and_earlystop(1, 0.5, 100, 0.68, 0.6, at=(0.5, 1, 2))
    assert _same(_weights(r), fell)


def test_resume_false_to_true_goes_back_to_best_pt(tiny_data, tmp_path):
    off = load_config("transformer_dcn_small", {**RESTORE, KEY: False})
    run = tmp_path / "r"
    t = _bare_trainer(off, tiny_data, run)
    t.checkpoint_and_earlystop(0, 0.5, 100, 0.70, 0.6, at=(0.5, 1, 2))
    best = _weights(t)
    _overfit(t)
    t.checkpoint_and_earlystop(0, 0.5, 100, 0.69, 0.6)  # not restored: last.pt holds the fall
    r = _bare_trainer(load_config("transformer_dcn_small", RESTORE), tiny_data, run, resume=True)
    assert r.resumed[-1]["changed"] == {KEY: [False, True]} and not _same(_weights(r), best)
    r.checkpoint_and_earlystop(1, 0.5, 100, 0.68, 0.6, at=(0.5, 1, 2))
    assert _same(_weights(r), best)


# ------------------------------------------------------------------ 3. semantics

def test_a_restore_leaves_best_pt_and_the_fall_in_history(tiny_data, tmp_path):
    cfg = load_config("transformer_dcn_small", RESTORE)
    t = _bare_trainer(cfg, tiny_data, tmp_path / "r")
    t.checkpoint_and_earlystop(0, 0.5, 100, 0.70, 0.6, at=(0.5, 1, 2))
    best = _weights(t)
    best_sha = file_sha256(t.out / "best.pt")
    _overfit(t)
    t.checkpoint_and_earlystop(0, 0.5, 100, 0.61, 0.6)
    assert file_sha256(t.out / "best.pt") == best_sha
    assert json.loads((t.out / "manifest.json").read_text())["checkpoint"]["sha256"] == best_sha
    assert _same(torch.load(t.out / "last.pt", weights_only=True)["model"], best)
    assert [h["valid_auc"] for h in read_history(t.out)] == [0.70, 0.61]  # the fall stays visible
    assert (t.best_epoch, t.best_auc) == (0.5, 0.70)
    assert "valid AUC 0.61000" in (t.out / "train.log").read_text().splitlines()[-1]
    assert "(back to the best weights, epoch 0.5)" in (t.out / "train.log").read_text().splitlines()[-1]


@pytest.fixture(scope="module")
def restored_run(tiny_data, tmp_path_factory):
    """Uninterrupted: validation 2 (epoch 1) falls and goes back to 0.5's weights (1 thread)."""
    out = tmp_path_factory.mktemp("restore") / "run"
    cfg = load_config("transformer_dcn_small", RESTORE)
    summary = train_model(cfg, tiny_data, None, out, quiet=True)
    log = (out / "train.log").read_text()
    return cfg, out, summary, log


def test_a_real_run_restores_after_its_fall(restored_run):
    _, out, summary, log = restored_run
    hist = summary["history"]
    assert hist[1]["valid_auc"] < hist[0]["valid_auc"]  # the setting forces a fall
    assert "epoch 1: " in log and "(back to the best weights, epoch 0.5)" in log
    assert len(read_history(out)) == 4


def test_resume_right_after_a_restore_equals_uninterrupted(restored_run, tiny_data, tmp_path, monkeypatch):
    cfg, _, full, _ = restored_run
    run = tmp_path / "r"
    _killed_after(2, cfg, tiny_data, run, monkeypatch)
    assert "back to the best weights" in (run / "train.log").read_text().splitlines()[-1]
    best = load_checkpoint(run / "best.pt")["model"]
    assert _same(torch.load(run / "last.pt", weights_only=True)["model"], best)
    resumed = train_model(cfg, tiny_data, None, run, quiet=True, resume=True)
    assert len(resumed["history"]) == len(full["history"]) == 4
    for a, b in zip(resumed["history"], full["history"]):  # one thread: bit for bit
        assert (a["epoch"], a["train_loss"], a["valid_auc"], a["lr"]) == \
               (b["epoch"], b["train_loss"], b["valid_auc"], b["lr"])


def test_predict_after_a_restore_uses_best_pt(restored_run, tiny_data, tmp_path, monkeypatch):
    from task2.predict import predict_run

    cfg, _, _, _ = restored_run
    run = tmp_path / "r"
    _killed_after(2, cfg, tiny_data, run, monkeypatch)  # the run ends on the restore
    predict_run(run, tiny_data, "task2", device="cpu")
    m = json.loads((run / "manifest.json").read_text())
    assert m["prediction"]["checkpoint_epoch"] == 0.5
    assert m["prediction"]["checkpoints_loaded"] == [{"path": "best.pt", "sha256": m["checkpoint"]["sha256"]}]


# ------------------------------------------------------------------ 4. DDP (gloo, CPU)

DDP_SCRIPT = """
import sys, torch
from task2.config import load_config
from task2.train import Trainer
data, out, epochs, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
cfg = load_config("transformer_dcn_small", {"batch_size": 512, "evals_per_epoch": 2, "early_stop_patience": 10,
                                            "max_epochs": epochs, "device": "cpu", "num_threads": 1})
t = Trainer(cfg, data, None, out, quiet=True, resume=resume)
t.fit()
torch.save({"state": t.core.state_dict(), "params": [n for n, _ in t.core.named_parameters()]},
           f"{out}/rank{t.dist.rank}.pt")
"""


def test_ddp_ranks_restore_the_same_weights_and_resume(tiny_data, tmp_path):
    """Every rank goes back to its own copy of the best weights: the ranks' parameters stay equal
    (batch-norm running stats are rank-local under DDP, rank 0's broadcast at each forward), and a
    --resume reads best.pt on every rank."""
    script, out = tmp_path / "ddp_restore.py", tmp_path / "ddp"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}

    def torchrun(epochs: int, resume: bool) -> None:
        with socket.socket() as s:  # a free port: other runs may hold a fixed one
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                            f"--master_port={port}", str(script), str(tiny_data), str(out), str(epochs),
                            str(int(resume))], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        a, b = (torch.load(out / f"rank{k}.pt", weights_only=True) for k in (0, 1))
        assert a["params"] == b["params"] and all(torch.equal(a["state"][n], b["state"][n]) for n in a["params"])

    torchrun(2, False)
    log = (out / "train.log").read_text().splitlines()
    assert any("back to the best weights" in line for line in log)
    if "back to the best weights" in log[-1]:  # the run ended on a restore: the ranks hold best.pt
        assert _same(torch.load(out / "rank0.pt", weights_only=True)["state"], load_checkpoint(out / "best.pt")["model"])
    torchrun(3, True)
    assert json.loads((out / "manifest.json").read_text())["world_size"] == 2


def test_killed_between_best_pt_and_last_pt(tiny_data, tmp_path, monkeypatch):
    """A kill after a new best.pt is written, before last.pt and the manifest: the manifest still
    pins the older best.pt. last.pt carries the best weights it goes back to, so the run resumes
    (it was refused in one line: the best.pt it would have read was no longer the pinned one)."""
    import task2.train as T

    cfg = load_config("transformer_dcn_small", RESTORE)
    run = tmp_path / "r"
    t = _bare_trainer(cfg, tiny_data, run)
    t.checkpoint_and_earlystop(0, 0.5, 100, 0.70, 0.6, at=(0.5, 1, 2))
    first = _weights(t)
    real = T.save_checkpoint

    def save(path, state):
        if path.name == "last.pt":
            raise KeyboardInterrupt
        return real(path, state)

    monkeypatch.setattr(T, "save_checkpoint", save)
    _overfit(t)
    with pytest.raises(KeyboardInterrupt):
        t.checkpoint_and_earlystop(0, 0.5, 100, 0.75, 0.6)  # a gain: best.pt written, then killed
    monkeypatch.setattr(T, "save_checkpoint", real)
    resumed = _bare_trainer(cfg, tiny_data, run, resume=True)
    assert resumed.history[-1]["epoch"] == 0.5 and resumed.best_auc == 0.70
    _overfit(resumed)
    resumed.checkpoint_and_earlystop(0, 0.5, 100, 0.69, 0.6)
    assert _same(_weights(resumed), first)  # the best of the resumed record, not the orphan best.pt
    off = load_config("transformer_dcn_small", {**RESTORE, KEY: False})
    assert _bare_trainer(off, tiny_data, run, resume=True).history[-1]["epoch"] == 1


def test_resume_right_after_a_mid_epoch_restore_equals_uninterrupted(tiny_data, tmp_path, monkeypatch):
    """Validation 2 of 3 per epoch (epoch 0.6667) falls and goes back; last.pt resumes inside the epoch."""
    cfg = load_config("transformer_dcn_small", {**RESTORE, "evals_per_epoch": 3, "learning_rate": 2e-3})
    full = train_model(cfg, tiny_data, None, tmp_path / "full", quiet=True)
    run = tmp_path / "r"
    _killed_after(2, cfg, tiny_data, run, monkeypatch)
    assert "epoch 0.6667: " in (run / "train.log").read_text().splitlines()[-1]
    assert "back to the best weights, epoch 0.3333" in (run / "train.log").read_text().splitlines()[-1]
    assert torch.load(run / "last.pt", weights_only=True)["steps_done"] >= 1
    resumed = train_model(cfg, tiny_data, None, run, quiet=True, resume=True)
    assert len(resumed["history"]) == len(full["history"]) >= 4
    for a, b in zip(resumed["history"], full["history"]):  # one thread: bit for bit
        assert (a["epoch"], a["train_loss"], a["valid_auc"], a["lr"]) == \
               (b["epoch"], b["train_loss"], b["valid_auc"], b["lr"])

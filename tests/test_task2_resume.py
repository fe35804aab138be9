"""task2 --resume: refuses what cannot change, applies and records what can, replays RNGs exactly."""
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmctr.errors import KitError
from task2.config import load_config
from mmctr.runtime import rng_state, set_rng_state
from task2.train import train_model

from conftest import ROOT

ONE = {"batch_size": 512, "max_epochs": 1, "num_threads": 1}
TWO = {**ONE, "max_epochs": 2}


@pytest.fixture(scope="module")
def one_epoch(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    train_model(load_config("transformer_dcn_small", ONE), tiny_data, None, out, quiet=True)
    return out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_resume_without_last_checkpoint_is_refused(tiny_data, tmp_path):
    with pytest.raises(KitError, match=r"--resume: .*last.pt not found"):
        train_model(load_config("transformer_dcn_small", TWO), tiny_data, None, tmp_path / "none",
                    quiet=True, resume=True)


def test_resume_with_another_model_or_changed_model_keys_is_refused(one_epoch, tiny_data, tmp_path):
    run = _copy(one_epoch, tmp_path / "r")
    with pytest.raises(KitError, match=r"holds model 'transformer_dcn', the config asks for 'din'"):
        train_model(load_config("din_baseline", TWO), tiny_data, None, run, quiet=True, resume=True)
    with pytest.raises(KitError, match=r"key\(s\) \['d_model', 'n_heads'\] differ"):
        train_model(load_config("transformer_dcn_small", {**TWO, "d_model": 32, "n_heads": 2}), tiny_data, None,
                    run, quiet=True, resume=True)
    with pytest.raises(KitError, match=r"key\(s\) \['batch_size'\] differ"):
        train_model(load_config("transformer_dcn_small", {**TWO, "batch_size": 256}), tiny_data, None,
                    run, quiet=True, resume=True)


def test_resume_applies_and_records_a_new_learning_rate(one_epoch, tiny_data, tmp_path):
    run = _copy(one_epoch, tmp_path / "r")
    summary = train_model(load_config("transformer_dcn_small", {**TWO, "learning_rate": 0.05}), tiny_data, None,
                          run, quiet=True, resume=True)
    assert summary["history"][1]["lr"] == 0.05  # the epoch trained at the new rate
    m = json.loads((run / "manifest.json").read_text())
    assert m["config"]["learning_rate"] == 0.05
    assert m["resumed"] == [{"from_epoch": 1, "changed": {"learning_rate": [0.001, 0.05]}}]


def test_resume_refuses_another_batch_order_and_records_the_rest(one_epoch, tiny_data, tmp_path):
    """nanoGPT's way: last.pt is trusted; only a change that would silently give another result
    (the seed's batch order here) is refused, any other change is recorded in `resumed`."""
    run = _copy(one_epoch, tmp_path / "r")
    with pytest.raises(KitError, match=r"key\(s\) \['seed'\] differ .*seed: 20242025 -> 7"):
        train_model(load_config("transformer_dcn_small", {**TWO, "seed": 7}), tiny_data, None, run,
                    quiet=True, resume=True)
    train_model(load_config("transformer_dcn_small", {**TWO, "early_stop_patience": 5, "grad_clip_norm": 1.0}),
                tiny_data, None, run, quiet=True, resume=True)
    m = json.loads((run / "manifest.json").read_text())
    assert m["resumed"] == [{"from_epoch": 1,
                             "changed": {"early_stop_patience": [3, 5], "grad_clip_norm": [10.0, 1.0]}}]


def test_resume_equals_uninterrupted(one_epoch, tiny_data, tmp_path):
    full = train_model(load_config("transformer_dcn_small", TWO), tiny_data, None, tmp_path / "full", quiet=True)
    run = _copy(one_epoch, tmp_path / "r")
    resumed = train_model(load_config("transformer_dcn_small", TWO), tiny_data, None, run, quiet=True, resume=True)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    for a, b in zip(resumed["history"], full["history"]):  # one thread: bit for bit
        assert (a["train_loss"], a["valid_auc"], a["lr"]) == (b["train_loss"], b["valid_auc"], b["lr"])


def test_rng_state_round_trips_every_generator():
    state = rng_state()
    draws = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]


def test_ddp_resume_replays_each_rank(tiny_data, tmp_path):
    """torchrun with two CPU processes trains one run (world_size 2), and its resume replays each rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    def ddp(out, epochs, *extra):
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                            "--master_port=29531", "-m", "task2", "train", "--data-dir", str(tiny_data),
                            "--config", "transformer_dcn_small", "--out", str(out), "--max-epochs", str(epochs),
                            "--set", "batch_size=512", "--set", "num_threads=1", "--device", "cpu", *extra],
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=400)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads((out / "manifest.json").read_text())

    full = ddp(tmp_path / "full", 2)["history"]
    first = ddp(tmp_path / "r", 1)
    assert first["world_size"] == 2 and len(first["history"]) == 1
    resumed = ddp(tmp_path / "r", 2, "--resume")["history"]
    assert [h["valid_auc"] for h in resumed] == [h["valid_auc"] for h in full]


def test_resume_on_another_item_info_is_refused(one_epoch, tiny_data, tmp_path):
    from mmctr import contract as C
    from mmctr.item_info import read_item_info, write_item_info

    run = _copy(one_epoch, tmp_path / "r")
    tags, emb = read_item_info(tiny_data / C.ITEM_INFO.relpath)
    other = tmp_path / "item_info.parquet"
    write_item_info(other, tags, emb * 2)
    with pytest.raises(KitError, match=r"--resume: input file\(s\) .*item_info.parquet.* differ"):
        train_model(load_config("transformer_dcn_small", TWO), tiny_data, other, run, quiet=True, resume=True)


def test_resume_after_an_epoch_without_gain_keeps_the_decayed_rate(one_epoch, tiny_data, tmp_path):
    """last.pt is written after the lr decay of an epoch without gain (it was written before it, so
    a resumed run trained on at the undecayed rate)."""
    import torch

    from task2.train import Trainer

    run = _copy(one_epoch, tmp_path / "r")
    cfg = load_config("transformer_dcn_small", {**TWO, "lr_decay_factor": 0.1})
    t = Trainer(cfg, tiny_data, None, run, quiet=True, resume=True)
    t.train_seconds, t.samples_per_s, t.epoch_generator = 1.0, [1.0], t.gen.get_state()
    t.checkpoint_and_earlystop(1, 0.5, 100, t.best_auc - 0.01, 0.6)  # no gain: decay
    assert t.history[-1]["lr"] == 1e-3  # the row keeps the rate the epoch trained at
    saved = torch.load(run / "last.pt", weights_only=True)
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)


def test_resume_refuses_a_damaged_history_before_training(tmp_path, tiny_data, monkeypatch, capsys):
    """`task2 train --resume` over a damaged history.jsonl trained a whole epoch, printed its
    result, then died on the history when drawing: the check now comes before any work."""
    import sys

    from task2 import train as train_mod
    from task2.cli import entry

    out = tmp_path / "runs" / "task2"
    out.mkdir(parents=True)
    (out / "history.jsonl").write_text('{"epoch": 1}\n{bad\n')
    monkeypatch.setattr(train_mod, "train_model", lambda *a, **k: pytest.fail("trained before the check"))
    monkeypatch.setattr(sys, "argv", ["task2", "train", "--data-dir", str(tiny_data), "--config", "din_baseline",
                                      "--out", str(out), "--resume"])
    with pytest.raises(SystemExit) as exc:
        entry()
    assert exc.value.code == 2 and "history.jsonl line 2 is not JSON" in capsys.readouterr().err


def test_resume_accepts_a_moved_run_and_item_info_with_the_same_bytes(tiny_data, tmp_path):
    """Inputs are compared by sha256, role by role: an item_info outside the data root and the
    track folder is recorded by absolute path, so a run folder and that item_info copied elsewhere
    (same bytes, another path) must still resume."""
    import shutil

    from mmctr import contract as C

    first = tmp_path / "x" / "item_info.parquet"
    first.parent.mkdir()
    shutil.copy(tiny_data / C.ITEM_INFO.relpath, first)
    run = tmp_path / "a" / "run"
    train_model(load_config("transformer_dcn_small", ONE), tiny_data, first, run, quiet=True)
    moved = tmp_path / "y" / "item_info.parquet"
    moved.parent.mkdir()
    shutil.copy(first, moved)
    first.unlink()
    summary = train_model(load_config("transformer_dcn_small", TWO), tiny_data, moved,
                          _copy(run, tmp_path / "b" / "run"), quiet=True, resume=True)
    assert len(summary["history"]) == 2

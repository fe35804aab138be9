"""task2 checkpoints: plain data, sha-pinned, rebuilt from model_args; predict records what it loaded."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.io import file_sha256
from mmctr.rundir import load_checkpoint
from task2.config import load_config
from task2.data import ItemTable
from task2.models import create_model, layers
from task2.predict import predict_run
from task2.predict import predict_split
from task2.train import Trainer

from conftest import ROOT


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    """One epoch of the main model; returns (run dir, valid probabilities computed in training)."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    trainer = Trainer(load_config("transformer_dcn_small", {"batch_size": 512, "max_epochs": 1, "num_threads": 1,
                                                          "code_sizes": [8, 32]}),  # derived state: k-means codes
                      tiny_data, None, out, quiet=True)
    trainer.fit()
    probs = predict_split(trainer.core, trainer.valid, 4096, trainer.dev, amp=False)
    return out, probs, trainer


def _manifest(run_dir):
    return json.loads((run_dir / "manifest.json").read_text())


def test_checkpoint_holds_plain_data_and_derived_state(run):
    out, _, trainer = run
    state = load_checkpoint(out / "best.pt", sha256=_manifest(out)["checkpoint"]["sha256"])
    args = state["model_args"]
    assert args["model"] == "transformer_dcn" and args["n_items"] == trainer.items.n_items
    assert args["config"] == trainer.cfg.net.model_dump() and args["max_len"] == 24
    codes = state["model"]["items.codes"]
    assert codes.shape == (len(trainer.items.emb), 2)  # one column per code size
    assert codes.max() > 1  # k-means codes, not zeros
    assert "items.mm_emb" not in state["model"]  # the item table itself comes from item_info


def test_predict_after_load_equals_predict_in_training(run, monkeypatch):
    out, probs, trainer = run
    monkeypatch.setattr(layers, "kmeans_codes", lambda *a, **k: pytest.fail("k-means re-run at load"))
    state = load_checkpoint(out / "best.pt", sha256=_manifest(out)["checkpoint"]["sha256"])
    items = ItemTable.load(trainer.item_info_path)
    model = create_model(state["model_args"], items.tags, items.emb, derive=False)
    assert int(model.items.codes.abs().sum()) == 0
    model.load_state_dict(state["model"])
    again = predict_split(model, trainer.valid, 1024, torch.device("cpu"), amp=False)
    np.testing.assert_allclose(again, probs, atol=1e-6, rtol=0)


def test_predict_records_what_it_loaded_and_side_predictions(run, tiny_data, tmp_path):
    out, _, _ = run
    main = predict_run(out, tiny_data, "task2")
    sha = _manifest(out)["checkpoint"]["sha256"]
    assert main["checkpoints_loaded"] == [{"path": "best.pt", "sha256": sha}] and main["checkpoints_used"] == 1
    side = predict_run(out, tiny_data, "task1_2", out=tmp_path / "other.csv")
    m = _manifest(out)
    assert m["prediction"] == main  # a side prediction leaves the run's prediction alone
    assert m["side_predictions"][-1]["sha256"] == side["sha256"] == file_sha256(tmp_path / "other.csv")
    assert not os.path.isabs(m["side_predictions"][-1]["path"])


def test_predict_into_the_data_dir_is_refused(run, tiny_data):
    out, _, _ = run
    test = tiny_data / C.TEST.relpath
    before = file_sha256(test)
    with pytest.raises(KitError, match="inside the data directory"):
        predict_run(out, tiny_data, "task2", out=test)
    assert file_sha256(test) == before


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("repin", [False, True])
def test_crafted_checkpoint_does_not_execute(run, tiny_data, tmp_path, repin):
    out, _, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    marker = tmp_path / "PWNED"
    torch.save({"model": _Evil(marker), "model_args": {}}, copy / "best.pt")
    if repin:  # the attacker also rewrites the manifest's hash
        m = _manifest(copy)
        m["checkpoint"]["sha256"] = file_sha256(copy / "best.pt")
        (copy / "manifest.json").write_text(json.dumps(m))
    r = subprocess.run([sys.executable, "-m", "task2", "predict", "--run", str(copy), "--data-dir", str(tiny_data)],
                       capture_output=True, text=True, cwd=ROOT)
    assert not marker.exists()
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert ("differs from the manifest" if not repin else "not a plain-data checkpoint") in r.stderr


@pytest.mark.parametrize("change", [{"max_len": 10**9}, {"n_tags": 10**12}, {"config": {"d_model": 10**6}},
                                    {"config": {"code_sizes": [10**7]}}])
def test_hostile_model_args_are_refused_before_allocating(run, tiny_data, tmp_path, change):
    out, _, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    state = load_checkpoint(copy / "best.pt")
    state["model_args"] = {**state["model_args"], **change}
    torch.save(state, copy / "best.pt")  # plain data, re-pinned: only the bounds stand in the way
    m = _manifest(copy)
    m["checkpoint"]["sha256"] = file_sha256(copy / "best.pt")
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(KitError, match="max_len|n_tags|tag ids|d_model|code size|unknown config key"):
        predict_run(copy, tiny_data, "task2")


def test_tampered_derived_codes_are_one_line(run, tiny_data, tmp_path):
    out, _, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    state = load_checkpoint(copy / "best.pt")
    n_rows = len(state["model"]["items.codes"])
    state["model"]["items.codes"] = torch.zeros(n_rows, 3, dtype=torch.long)  # not the 2 code sizes of model_args
    torch.save(state, copy / "best.pt")
    m = _manifest(copy)
    m["checkpoint"]["sha256"] = file_sha256(copy / "best.pt")
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(KitError, match="items.codes"):
        predict_run(copy, tiny_data, "task2")


def test_predict_cannot_overwrite_the_runs_own_files(run, tiny_data):
    out, _, _ = run
    before = file_sha256(out / "best.pt")
    with pytest.raises(KitError, match="would overwrite the run's own best.pt"):
        predict_run(out, tiny_data, "task2", out=out / "best.pt")
    assert file_sha256(out / "best.pt") == before

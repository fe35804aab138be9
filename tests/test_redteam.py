"""Red-team regressions: attacks on the merged kit that went through, each pinned by a test."""
from __future__ import annotations

import pytest


# ------------------------------------------------------------ check: an unverifiable run is not ok

from test_submission_integrity import (  # noqa: E402,F401  (fixtures and run builders)
    clean_code, data, edit, make_run, restamp_prediction, run_check)


def _blend(runs):
    from mmctr import rundir as L

    lay = L.TrackDir.of(runs)
    lines = lay.prediction.read_text().split("\n")
    for i in range(1, len(lines) - 1):
        idx, p = lines[i].split(",")
        lines[i] = f"{idx},{(float(p) + 0.9) / 2:.8f}"
    lay.prediction.write_text("\n".join(lines))
    restamp_prediction(runs)


class Junk:  # any class outside torch's weights_only allowlist
    pass


def _unloadable_checkpoint(runs):
    """best.pt gains a non-plain object (weights_only refuses it); its sha256 is re-pinned."""
    import torch

    from mmctr.io import file_sha256
    from mmctr import rundir as L

    ck = L.TrackDir.of(runs).runs / L.TASK2_DIR / "best.pt"
    state = torch.load(ck, weights_only=True)
    state["junk"] = Junk()
    torch.save(state, ck)
    sha = file_sha256(ck)
    edit(L.TrackDir.of(runs).task2_manifest, lambda d: (
        d["checkpoint"].update(sha256=sha), d["prediction"]["checkpoints_loaded"][0].update(sha256=sha)))


def _checkpoint_path_elsewhere(runs):
    from mmctr import rundir as L

    edit(L.TrackDir.of(runs).task2_manifest, lambda d: d["checkpoint"].update(path="gone.pt"))


@pytest.mark.parametrize("sabotage", [_unloadable_checkpoint, _checkpoint_path_elsewhere])
def test_blend_behind_an_unverifiable_checkpoint_is_not_ok(tmp_path, data, clean_code, sabotage):
    """Task-2 track: a blended prediction passed check + pack once the checkpoint could not be
    loaded (a pickled object in best.pt, or the manifest's checkpoint path pointing at nothing):
    re-scoring was skipped with a warning and the report said ok."""
    runs = make_run(tmp_path, data, "task2")
    assert run_check(runs, data, "task2", clean_code).ok
    _blend(runs)
    sabotage(runs)
    report = run_check(runs, data, "task2", clean_code)
    assert "provenance" in report.broken, report.lines()


def _data_copy_with_train_changed(data, to):
    """A participant's copy of the data whose train.parquet gained rows (test rows, perturbed)."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmctr import contract as C

    shutil.copytree(data, to, symlinks=True)
    train = to / C.TRAIN.relpath
    t = pq.read_table(train)
    pq.write_table(pa.concat_tables([t, t.slice(0, 10)]), train)
    return to


def test_run_trained_on_a_modified_train_parquet_fails_against_the_real_data(tmp_path, data, clean_code):
    """A run trained on another train.parquet (e.g. perturbed test rows with labels appended)
    passed `check --data-dir REAL`: files under the data dir were matched by path, never by sha256."""
    mine = _data_copy_with_train_changed(data, tmp_path / "mine")
    runs = make_run(tmp_path, mine, "task2")
    assert run_check(runs, mine, "task2", clean_code).ok
    report = run_check(runs, data, "task2", clean_code)
    assert "inputs-in-data" in report.broken and any("trained on modified data" in v.reason
                                                     for v in report.violations), report.lines()


def test_run_whose_manifest_hides_train_parquet_is_not_ok(tmp_path, data, clean_code):
    from mmctr import contract as C
    from mmctr import rundir as L

    runs = make_run(tmp_path, data, "task2")
    edit(L.TrackDir.of(runs).task2_manifest,
         lambda d: [d[k].pop(C.TRAIN.relpath) for k in ("inputs", "data_files")])
    assert "inputs-in-data" in run_check(runs, data, "task2", clean_code).broken


def test_input_the_real_data_lacks_is_not_ok(tmp_path, data, clean_code):
    from mmctr import contract as C
    from mmctr import rundir as L

    runs = make_run(tmp_path, data, "task2")
    extra = f"{C.CTR_DIR}/train_extra.parquet"
    edit(L.TrackDir.of(runs).task2_manifest, lambda d: d["inputs"].update({extra: "0" * 64}))
    assert "inputs-in-data" in run_check(runs, data, "task2", clean_code).broken



def test_tree_library_behind_an_import_of_a_git_ignored_module_is_caught(tmp_path, data, clean_code,
                                                                          monkeypatch):
    import subprocess

    import submission.rules as rules_mod

    repo = tmp_path / "repo"
    (repo / "task1").mkdir(parents=True)
    (repo / ".gitignore").write_text("/runs/\n")
    (repo / "task1" / "fuse.py").write_text("from runs import helper  # noqa\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    (repo / "runs").mkdir()
    (repo / "runs" / "helper.py").write_text("from sklearn.ensemble import GradientBoostingClassifier\n")
    monkeypatch.setattr(rules_mod, "REPO_ROOT", repo)
    runs = make_run(tmp_path, data, "task2")
    assert "no-trees" in run_check(runs, data, "task2", clean_code).broken


def test_fixed_din_with_an_edited_forward_is_caught(tmp_path, data, clean_code, monkeypatch):
    from task2.models import din

    plain = din.DIN.forward

    def forward(self, batch):  # the same modules and shapes, another function
        return plain(self, batch) * 1.5

    monkeypatch.setattr(din.DIN, "forward", forward)
    runs = make_run(tmp_path, data, "task1")
    assert "fixed-din" in run_check(runs, data, "task1", clean_code).broken

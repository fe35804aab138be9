"""Inputs the kit cannot vouch for are named, never trusted (rule `unverified-input`), and a
run folder that moved still names the same inputs."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from mmctr import contract as C
from mmctr.io import file_sha256
from mmctr.rundir import portable
from mmctr import rundir as L
from submission.pack import _reproduce_md

from runs_factory import edit, run_check
from runs_factory import make_run_with_weights as make_run


def _precomputed(runs: Path, feature: Path) -> None:
    """task1 read `feature` through a `precomputed: file:` source (declared as build.py does)."""
    sha = file_sha256(feature)

    def add(d):
        d["inputs"][str(feature)] = sha
        d["models"].append({"name": "precomputed:stack", "kind": "precomputed", "source": "local",
                            "path": str(feature), "sha256": sha})
    edit(L.TrackDir.of(runs).task1_manifest, add)


def test_precomputed_scores_under_the_runs_dir_are_unverified(tmp_path, data, weights, clean_code):
    """GBDT scores per item written under runs/ and fused by task1: not a kit command's output."""
    runs = make_run(tmp_path, data, "task1_2", weights)
    scores = runs / "gbdt_item_scores.npy"
    np.save(scores, np.zeros((301, 4), np.float32))
    _precomputed(runs, scores)
    rep = run_check(runs, data, "task1_2", clean_code)
    assert rep.broken == ["unverified-input"], rep.lines()
    assert "gbdt_item_scores.npy" in rep.violations[0].where and "--allow-input" in rep.violations[0].reason


def test_a_declared_precomputed_file_outside_is_unverified(tmp_path, data, weights, clean_code):
    feats = tmp_path / "elsewhere" / "vlm.npy"
    feats.parent.mkdir()
    np.save(feats, np.ones((301, 4), np.float32))
    runs = make_run(tmp_path, data, "task1_2", weights)
    _precomputed(runs, feats)
    rep = run_check(runs, data, "task1_2", clean_code)
    assert rep.broken == ["unverified-input"], rep.lines()


def test_allow_input_names_the_file_with_its_sha256(tmp_path, data, weights, clean_code):
    feats = tmp_path / "vlm.npy"
    np.save(feats, np.ones((301, 4), np.float32))
    runs = make_run(tmp_path, data, "task1_2", weights)
    _precomputed(runs, feats)
    rep = run_check(runs, data, "task1_2", clean_code, allow_inputs=[f"{feats}=Qwen2-VL captions, mean-pooled"])
    assert rep.ok, rep.lines()
    [a] = rep.allowed_inputs
    assert a["sha256"] == file_sha256(feats) and a["how"] == "Qwen2-VL captions, mean-pooled"
    assert any(line.startswith("info allowed input") and file_sha256(feats) in line for line in rep.lines())
    md = _reproduce_md("task1_2", "0" * 64, {"commit": None, "dirty": False}, {},
                       {"rows": 1, "column": "Task1&2", "prediction_sha256": "x", "zip_sha256": "y"}, None, None, {},
                       rep.to_dict()["allowed_inputs"])
    assert file_sha256(feats) in md and "Qwen2-VL captions" in md


def test_an_output_of_a_kit_command_is_vouched_for(tmp_path, data, weights, clean_code):
    """A file whose sha256 a kit manifest in the runs dir lists as written is trusted (here:
    task1's own item_info read back by task1)."""
    runs = make_run(tmp_path, data, "task1_2", weights)
    lay = L.TrackDir.of(runs)
    edit(lay.task1_manifest, lambda d: d["inputs"].update({str(lay.item_info): file_sha256(lay.item_info)}))
    assert run_check(runs, data, "task1_2", clean_code).ok


def test_a_manifest_written_by_other_code_vouches_for_nothing(tmp_path, data, weights, clean_code):
    """A script that calls write_manifest itself (no kit command's ledger, or one that loaded a
    tree library) cannot make its own file look like a kit output."""
    from mmctr.rundir import write_manifest
    from runs_factory import honest_ledger

    runs = make_run(tmp_path, data, "task1_2", weights)
    scores = runs / "gbdt_item_scores.npy"
    np.save(scores, np.zeros((301, 4), np.float32))
    _precomputed(runs, scores)
    for i, led in enumerate([honest_ledger(entry=None), honest_ledger(modules=["lightgbm", "numpy"])]):
        write_manifest(runs / f"fake{i}" / "manifest.json", "task1", ledger=led,
                       outputs={"../gbdt_item_scores.npy": file_sha256(scores)})
    rep = run_check(runs, data, "task1_2", clean_code)
    assert rep.broken == ["unverified-input"], rep.lines()


def test_portable_paths_are_relative_to_the_data_and_the_run_folder(tmp_path):
    data, run = tmp_path / "data", tmp_path / "runs" / "t" / "task1"
    (data / C.CTR_DIR).mkdir(parents=True)
    run.mkdir(parents=True)
    got = portable({data / C.TRAIN.relpath: "a", run / "x.npy": "b", run.parent / "task2" / "y": "c",
                    Path("/opt/weights.bin"): "d"}, data, run)
    assert got == {C.TRAIN.relpath: "a", "x.npy": "b", "../task2/y": "c", "/opt/weights.bin": "d"}


def test_a_moved_task1_build_still_names_its_inputs(tmp_path):
    """A real task1 build: its manifest holds no absolute path of the data or the run folder,
    so a copied or moved run folder (and data mounted elsewhere) passes `inputs-in-data`."""
    import json

    from mmctr.sample import SampleConfig, generate
    from task1 import build as build_mod
    from task1_factory import cfg_of

    data = tmp_path / "data"
    generate(data, SampleConfig(n_items=80, n_users=120, n_train=600, n_valid=100, n_test=100, workers=1))
    out = tmp_path / "runs" / "a" / "task1"
    build_mod.build(data, cfg_of("tags", "behaviour"), out, cache_dir=tmp_path / "c", progress=False)
    moved = tmp_path / "elsewhere" / "b"
    shutil.move(str(out.parent), str(moved))
    shutil.move(str(data), str(tmp_path / "data2"))
    m = json.loads((moved / "task1" / L.TASK1_MANIFEST).read_text())
    text = json.dumps({k: m[k] for k in ("inputs", "outputs")})
    assert str(tmp_path) not in text, text
    for rel in m["inputs"]:
        assert (tmp_path / "data2" / rel).exists(), rel
    assert (moved / "task1" / next(iter(m["outputs"]))).is_file()

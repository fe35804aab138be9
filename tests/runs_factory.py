"""Run folders fabricated as task1 build + task2 train/predict write them, and the rule check over them.

Plain functions shared by the rule-check tests (test_rules.py, test_submission.py, test_rules_inputs.py,
test_fixed_din_integrity.py, test_plain_errors.py, test_ledger.py); their fixtures live in conftest.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmctr import contract as C
from mmctr.io import file_sha256
from mmctr.item_info import read_item_info, write_item_info
from mmctr import ledger
from mmctr import rundir as L
from mmctr.paths import DataPaths
from mmctr.rundir import write_manifest
from mmctr.tracks import FIXED_DIN_SOURCES, fixed_din_config, get_track
from submission.cli import entry
from submission.rules import check

torch.set_num_threads(1)


def honest_ledger(entry="task2 train", **changes) -> dict:
    """A ledger as an honest kit command writes it (mmctr.ledger.snapshot's shape), sealed."""
    body = {"version": ledger.VERSION, "python": "3.11", "argv": ["-m", "task2"], "entry": entry,
            "modules": ["click", "json", "mmctr", "numpy", "pandas", "pyarrow", "sklearn", "task2", "torch"],
            "watched": ["sklearn", "sklearn.metrics"], "attempted": [], "files_run": [],
            "sources": dict(FIXED_DIN_SOURCES) if entry == "task2 train" else {}, "processes": [], "n_processes": 0,
            "weights_opened": [], "network": [], "n_network": 0,
            "dynamic_code": {"compile": 0, "exec": 0, "samples": []}, **changes}
    return ledger.seal(body)


def small_din_args(n_items: int, n_tags: int) -> dict:
    return {"model": "din", "config": {**fixed_din_config()["net"], "net_dropout": 0.1}, "max_len": 64,
            "seed": 20242025, "n_items": n_items, "n_tags": n_tags}


def _predict(model, data: Path, n_items: int) -> np.ndarray:
    from task2.data import load_split
    from task2.predict import predict_split

    test = load_split(DataPaths.resolve(data).table(C.TEST), 64, n_items, need_label=False)
    return predict_split(model, test, 4096, torch.device("cpu"), False)


def make_run(root: Path, data: Path, track: str, state_hook=None, config=None, models=None) -> Path:
    """A run directory as `task1 build` + `task2 train` + `task2 predict` write it.

    config: the task2 manifest's config (default: the fixed DIN's); models: task1's declared
    pretrained weights ([{"name", "source", "path", "sha256"}]).
    """
    from mmctr.rundir import save_checkpoint
    from task2.data import ItemTable
    from task2.models import create_model
    from task2.predict import write_prediction

    t = get_track(track)
    paths = DataPaths.resolve(data)
    runs = root / "runs" / t.name
    lay = L.TrackDir.of(runs)
    run2 = runs / L.TASK2_DIR
    run2.mkdir(parents=True)
    official = paths.table(C.ITEM_INFO)
    if t.new_embeddings:
        tags, emb = read_item_info(official)
        new = np.random.default_rng(0).normal(size=emb.shape).astype(np.float32)
        new[0] = 0
        write_item_info(lay.item_info, tags, new)
        write_manifest(lay.task1_manifest, "task1", config={"text_encoder": "none", "dim": C.EMB_DIM},
                       inputs={C.ITEM_FEATURE.relpath: file_sha256(paths.table(C.ITEM_FEATURE)),
                               **{m["path"]: m["sha256"] for m in models or ()}}, models=models or [],
                       timings={"encode": 1.0}, outputs={L.TASK1_ITEM_INFO: file_sha256(lay.item_info)},
                       ledger=honest_ledger("task1 build"))
        item_info, info_entry = lay.item_info, {"path": f"../{L.TASK1_DIR}/{L.TASK1_ITEM_INFO}", "root": "run"}
    else:
        item_info, info_entry = official, {"path": C.ITEM_INFO.relpath, "root": "data"}
    items = ItemTable.load(item_info)
    torch.manual_seed(0)
    args = small_din_args(items.n_items, items.n_tags)
    model = create_model(args, items.tags, items.emb)
    state = {"model": model.state_dict(), "model_args": args, "epoch": 1}
    if state_hook:
        state_hook(state, model)
    ck_sha = save_checkpoint(run2 / "best.pt", state)
    probs = _predict(model, data, items.n_items)
    write_prediction(lay.prediction, probs, t.column)
    info_sha = file_sha256(item_info)
    data_files = {C.TRAIN.relpath: file_sha256(paths.table(C.TRAIN)),
                  C.VALID.relpath: file_sha256(paths.table(C.VALID))}
    if not t.new_embeddings:
        data_files[C.ITEM_INFO.relpath] = info_sha
    fixed = fixed_din_config()
    config = config if config is not None else {"model": "din", **fixed["net"], **fixed["train"]}
    test = paths.table(C.TEST)
    write_manifest(
        lay.task2_manifest, "task2", config=config, runtime={"device": "cpu", "max_epochs": 1},
        n_models=1, pretrained=[], inputs={**data_files, info_entry["path"]: info_sha}, data_files=data_files,
        item_info={**info_entry, "sha256": info_sha}, best_epoch=1, best_valid_auc=0.6, history=[],
        checkpoint={"path": "best.pt", "sha256": ck_sha}, ledger=honest_ledger(),
        prediction={"ledger": honest_ledger("task2 predict", weights_opened=[str(run2 / "best.pt")]),
                    "path": C.SUBMISSION_FILE, "sha256": file_sha256(lay.prediction), "rows": len(probs),
                    "column": t.column, "track": t.name, "test_path": C.TEST.relpath,
                    "test_sha256": file_sha256(test), "checkpoint_epoch": 1,
                    "checkpoints_loaded": [{"path": "best.pt", "sha256": ck_sha}], "checkpoints_used": 1})
    return runs


def edit(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def restamp_prediction(runs: Path) -> None:
    lay = L.TrackDir.of(runs)
    edit(lay.task2_manifest, lambda d: d["prediction"].update(sha256=file_sha256(lay.prediction)))


def run_check(runs, data, track, code, **kw):
    return check(track, runs, data, code_dirs=[code], task2_code=kw.pop("task2_code", [code]), **kw)


def cli(monkeypatch, capsys, *args) -> tuple:
    monkeypatch.setattr(sys, "argv", ["submission", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        entry()
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def custom_config() -> dict:
    return {"model": "mmctr", "embedding_dim": 32, "learning_rate": 1e-3, "batch_size": 1024,
            "num_heads": 2}


def make_run_with_weights(root: Path, data: Path, track: str, weights: Path, config=None) -> Path:
    """A run directory as `make task1 task2` writes it; task1 declares the encoder weights."""
    if config is None and get_track(track).custom_model:
        config = custom_config()
    models = [{"name": "encoder", "source": "package:encoder-weights", "path": str(weights),
               "sha256": file_sha256(weights)}]
    return make_run(root, data, track, config=config, models=models)

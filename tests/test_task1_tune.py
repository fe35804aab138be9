"""`task1 tune`: a grid over the five Task-1 keys, each trial through task1.evaluate, results
appended to a CSV, the best point re-run with other seeds, the winner written as a DIN config."""
from __future__ import annotations

import csv

import pytest
import torch
import yaml

from mmctr.errors import KitError
from mmctr.tracks import TASK1_TUNABLE

from task1 import tune as tune_mod
from task1.tune import BEST_NAME, RESULTS_NAME, load_tune_config, points


def test_space_is_typed_and_limited_to_the_five_keys():
    cfg = load_tune_config("tune_din")
    assert cfg.search == "grid" and len(points(cfg)) == 2
    assert {k for p in points(cfg) for k in p} == set(TASK1_TUNABLE)
    with pytest.raises(KitError, match=r"unknown config key 'space.embedding_dim'"):
        load_tune_config("tune_din", {"space": {"embedding_dim": [32]}})
    with pytest.raises(KitError, match=r"net_dropout value 1.5 is outside"):
        load_tune_config("tune_din", {"space": {"net_dropout": [1.5]}})
    with pytest.raises(KitError, match=r"'space.batch_size.0' = True"):
        load_tune_config("tune_din", {"space": {"batch_size": [True]}})
    rnd = load_tune_config("tune_din", {"search": "random", "trials": 3, "space": {"net_dropout": [0, 0.1, 0.2]}})
    got = points(rnd)
    assert len(got) == 3 and len({tuple(p.values()) for p in got}) == 3 and len(rnd.space.grid()) == 6
    assert all(p in rnd.space.grid() for p in got) and got == points(rnd)  # seeded


def test_tune_two_trials_one_epoch(tiny_data, tmp_path):
    torch.set_num_threads(1)
    item_info = tiny_data / "MicroLens_1M_x1" / "item_info.parquet"
    cfg = load_tune_config("tune_din", {"max_epochs": 1, "seeds": 2,
                                        "space": {"batch_size": [512], "learning_rate": [1e-3, 3e-3],
                                                  "embedding_regularizer": [1e-6]}})
    s = tune_mod.tune(tiny_data, item_info, tmp_path / "t", cfg, quiet=True, num_threads=1)
    rows = list(csv.DictReader(open(tmp_path / "t" / RESULTS_NAME)))
    assert [r["kind"] for r in rows] == ["search", "search", "seed"]
    assert {float(r["learning_rate"]) for r in rows[:2]} == {1e-3, 3e-3}
    for r in rows:
        assert 0.3 < float(r["new_valid_auc"]) < 1.0
    assert rows[2]["seed"] != rows[0]["seed"]
    best = yaml.safe_load((tmp_path / "t" / BEST_NAME).read_text())
    assert best["learning_rate"] == s["best_point"]["learning_rate"] and best["batch_size"] == 512
    assert best["model"] == "din" and best["seed"] == 20242025 and best["embedding_dim"] == 64
    assert len(s["seed_aucs"]) == 2 and s["seed_std"] >= 0
    from task2.config import load_config
    assert load_config(str(tmp_path / "t" / BEST_NAME))["learning_rate"] == s["best_point"]["learning_rate"]


def test_tune_refuses_out_in_data_dir(tiny_data):
    cfg = load_tune_config("tune_din", {"max_epochs": 1})
    with pytest.raises(KitError, match=r"inside the data directory"):
        tune_mod.tune(tiny_data, tiny_data / "MicroLens_1M_x1" / "item_info.parquet", tiny_data / "tune", cfg)

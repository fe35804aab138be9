"""bench/bench_valid_noise.py: how much of a fall or a gap the validation rows alone can make."""
import json

import numpy as np
import pytest

from conftest import ROOT, load_script
from task2.config import load_config
from task2.train import train_model


@pytest.fixture(scope="module")
def bench():
    return load_script(ROOT / "bench" / "bench_valid_noise.py")


def test_paired_resamples_give_no_spread_to_a_column_against_itself(bench):
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.3).astype(np.float32)
    s = y + rng.normal(0, 1, 500)
    boot = bench.bootstrap(y, {"a": s, "b": s.copy(), "noise": rng.normal(size=500)}, 200, seed=1)
    assert np.array_equal(boot["a"], boot["b"])  # the same resample for every column
    assert 0.01 < boot["a"].std() < 0.05 and abs(boot["noise"].mean() - 0.5) < 0.02


def test_measures_best_last_and_the_oracle_of_a_trained_run(bench, tiny_data, tmp_path):
    run = tmp_path / "run"
    cfg = load_config("transformer_dcn_small", {"batch_size": 512, "max_epochs": 2, "num_threads": 1,
                                                "early_stop_patience": 10})
    summary = train_model(cfg, tiny_data, None, run, quiet=True)
    r = bench.measure(run, tiny_data, resamples=100)
    truth = json.loads((tiny_data / "sample_truth" / "summary.json").read_text())
    assert r["rows"] == 800 and r["epochs"]["last"] == 1
    assert r["auc"]["best"] == pytest.approx(summary["best_valid_auc"], abs=1e-6)  # best.pt reloaded
    assert r["auc"]["last"] == pytest.approx(summary["history"][-1]["valid_auc"], abs=1e-6)
    assert r["auc"]["oracle"] == pytest.approx(truth["valid_seq_oracle_auc"], abs=1e-9)
    value, sd, lo, hi = r["diff"]["gap (oracle - best)"]
    assert value == pytest.approx(r["auc"]["oracle"] - r["auc"]["best"]) and sd > 0 and lo < value < hi

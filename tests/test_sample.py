"""The sample generator: organisers' layout, deterministic, with a planted signal."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.metrics import roc_auc
from mmctr.sample import MARKER, SampleConfig, World, generate, read_truth, summary

from conftest import ROOT, TINY, snapshot


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic(tiny_data, tmp_path):
    again = tmp_path / "again"
    generate(again, TINY)
    assert digest(again) == digest(tiny_data)
    other = tmp_path / "other"
    generate(other, SampleConfig(**{**TINY.__dict__, "seed": 1}))
    assert digest(other) != digest(tiny_data)


def test_layout_and_sizes(tiny_data):
    for table in C.ALL_TABLES:
        assert (tiny_data / table.relpath).is_file(), table.relpath
    assert pq.read_metadata(tiny_data / C.TRAIN.relpath).num_rows == TINY.n_train
    assert pq.read_metadata(tiny_data / C.TEST.relpath).num_rows == TINY.n_test
    assert C.LABEL not in pq.read_schema(tiny_data / C.TEST.relpath).names  # test labels hidden
    assert pq.read_metadata(tiny_data / C.ITEM_INFO.relpath).num_rows == TINY.n_items + 1
    assert len(list((tiny_data / C.IMAGES_DIR).glob("*.jpg"))) == TINY.n_items
    assert pq.read_schema(tiny_data / C.ITEM_INFO.relpath).equals(C.ITEM_INFO_ARROW, check_metadata=False)


def test_sequences_follow_real_statistics(tiny_data):
    seqs = np.array(pq.read_table(tiny_data / C.ITEM_SEQ_TABLE.relpath).column(C.ITEM_SEQ).to_pylist())
    lengths = (seqs > 0).sum(1)
    assert lengths.min() >= 3
    assert 4 <= np.median(lengths) <= 8
    # left-padded, most recent last: no zero after the first non-zero
    first = np.argmax(seqs > 0, axis=1)
    assert all((row[f:] > 0).all() for row, f in zip(seqs, first))


def test_each_click_comes_with_three_sampled_non_clicks(tiny_data):
    t = pq.read_table(tiny_data / C.TRAIN.relpath).to_pydict()
    assert np.mean(t[C.LABEL]) == 0.25
    groups = {}
    for u, seq, item, label in zip(t[C.USER_ID], t[C.ITEM_SEQ], t[C.ITEM_ID], t[C.LABEL]):
        groups.setdefault((u, tuple(seq)), []).append((item, label))
    assert len(groups) == TINY.n_train // 4
    for (_, seq), rows in groups.items():
        items = [i for i, _ in rows]
        assert sorted(lab for _, lab in rows) == [0, 0, 0, 1]
        assert len(set(items)) == 4 and not set(items) & set(seq)  # distinct, none already seen
    assert t[C.LABEL][:8] != [1, 0, 0, 0, 1, 0, 0, 0]  # rows shuffled, not in event order


def _rows(negatives, m=20_000, **kw):
    world = World(SampleConfig(**{**TINY.__dict__, "n_items": 1000, "negatives": negatives, **kw}))
    users, seqs, targets, p, labels = world.interactions(m, np.random.default_rng(0), 0.0)
    return world, seqs, targets, p, labels


def test_oracle_is_the_calibrated_posterior():
    for negatives in ("uniform", "popularity"):
        _, _, _, p, y = _rows(negatives)
        bins = np.digitize(p, [0.1, 0.3, 0.5, 0.7, 0.9])
        for b in np.unique(bins):
            sel = bins == b
            if sel.sum() > 500:
                assert abs(y[sel].mean() - p[sel].mean()) < 0.03, (negatives, b)


def test_item_side_signal_depends_on_the_sampler():
    world, _, targets, _, y = _rows("uniform")
    assert roc_auc(y, world.views_level[targets]) > 0.62  # clicks favour popular items, the sampler does not
    world, _, targets, _, y = _rows("popularity", pop_alpha=1.0)
    assert abs(roc_auc(y, world.views_level[targets]) - 0.5) < 0.05  # pop^1 non-clicks cancel popularity
    assert roc_auc(y, world.likes_level[targets]) > 0.6  # quality still shows


def test_bernoulli_shape_is_kept(tmp_path):
    root = tmp_path / "b"
    generate(root, SampleConfig(**{**TINY.__dict__, "shape": "bernoulli"}))
    _, y = read_truth(root, "valid")
    assert 0.18 < y.mean() < 0.32 and y.mean() != 0.25
    assert summary(root)["valid_oracle_auc"] > 0.75


def test_planted_signal_and_positive_rate(tiny_data):
    p, y = read_truth(tiny_data, "valid")
    assert y.mean() == 0.25
    oracle = roc_auc(y, p)
    assert oracle > 0.85
    assert abs(summary(tiny_data)["valid_oracle_auc"] - oracle) < 1e-12
    # seeing only the sequence, not the user, caps what any model can reach
    assert 0.6 < summary(tiny_data)["valid_seq_oracle_auc"] < oracle
    train_y = pq.read_table(tiny_data / C.TRAIN.relpath).column(C.LABEL).to_numpy()
    assert 0.18 < train_y.mean() < 0.32


def test_sampler_settings_are_checked(tmp_path):
    import pytest

    from mmctr.errors import KitError

    for bad, match in (({"negatives": "zipf"}, "negatives"), ({"pop_alpha": 40.0}, "pop_alpha"),
                       ({"n_items": 35}, "at least 36 items"), ({"neg_per_click": 0}, "neg_per_click"),
                       ({"shape": "poisson"}, "shape")):
        with pytest.raises(KitError, match=match):
            SampleConfig(**{**TINY.__dict__, **bad})
    SampleConfig(**{**TINY.__dict__, "n_items": 35, "shape": "bernoulli"})  # no non-clicks to draw


# ---------- the sampler never overwrites a data set ----------

@pytest.fixture()
def data(data_copy):
    return data_copy


MINI = SampleConfig(n_items=40, n_users=50, n_train=300, n_valid=100, n_test=100, image_size=16, workers=1)


def sample_cli(*args):
    return subprocess.run([sys.executable, "-m", "mmctr", "sample", *args], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_sample_refuses_an_existing_data_set(data):
    (data / MARKER).unlink()  # as the organisers ship it: no sampler marker
    before = snapshot(data)
    small = ["--items", "40", "--users", "50", "--train", "300", "--valid", "100", "--test", "100"]
    for target in (data, data / C.CTR_DIR, data / "inside"):
        r = sample_cli("--out", str(target), *small)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"error: --out {target} is ")
        assert "data set" in r.stderr
    with pytest.raises(KitError, match="is a data set"):
        generate(data, MINI)
    assert snapshot(data) == before


def test_sample_refuses_a_foreign_folder_but_overwrites_its_own(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(KitError, match="is a non-empty folder that the sampler did not make"):
        generate(foreign, MINI)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(KitError, match="is a file, not a folder"):
        generate(tmp_path / "afile", MINI)
    empty = tmp_path / "empty"
    empty.mkdir()
    generate(empty, MINI)
    first = (empty / C.TRAIN.relpath).read_bytes()
    generate(empty, SampleConfig(**{**MINI.__dict__, "seed": 3}))  # a previous sample: replaced
    assert (empty / MARKER).is_file() and (empty / C.TRAIN.relpath).read_bytes() != first

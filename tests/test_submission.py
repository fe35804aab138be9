"""submission: a good run passes check and packs; every planted rule violation is caught.

Runs are fabricated the way task1/task2 write them (runs_factory.make_run: item_info
via mmctr.item_info, a real DIN checkpoint, its own prediction, manifests via mmctr.rundir) on
a tiny generated sample; the packed zip must score exactly the AUC of that prediction.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mmctr import contract as C
from mmctr.io import file_sha256
from mmctr.item_info import read_item_info, write_item_info
from mmctr.rundir import read_manifest
from mmctr.metrics import roc_auc
from mmctr.paths import DataPaths
from mmctr.sample import TRUTH_DIR
from mmctr.sample import read_truth
from mmctr.tracks import TASK1_TUNABLE, TRACKS, fixed_din_config, get_track
from mmctr import rundir as L
from submission.prediction import score
from submission.rules import RULES

from runs_factory import cli, edit, restamp_prediction, run_check
from runs_factory import make_run_with_weights as make_run

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ fixtures and fabrication

def din_config(**changes) -> dict:
    fixed = fixed_din_config()
    return {"model": "din", **fixed["net"], **fixed["train"], **changes}


def write_prediction(path: Path, scores, column: str, ids=None) -> None:
    ids = np.arange(len(scores)) if ids is None else ids
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"{C.SUBMISSION_ID},{column}\n")
        for i, s in zip(ids, scores):
            f.write(f"{int(i)},{float(s)!r}\n")


def run_prediction(runs: Path) -> np.ndarray:
    return np.loadtxt(L.TrackDir.of(runs).prediction, delimiter=",", skiprows=1)[:, 1]


def replace_item_info(runs: Path, table: pa.Table) -> None:
    """Plant a bad item_info and restamp every hash, so only the item_info rule can fire."""
    lay = L.TrackDir.of(runs)
    pq.write_table(table, lay.item_info)
    sha = file_sha256(lay.item_info)
    edit(lay.task1_manifest, lambda d: d["outputs"].update({str(lay.item_info): sha}))

    def t2(d):
        d["item_info"]["sha256"] = sha
        d["inputs"][str(lay.item_info)] = sha
    edit(lay.task2_manifest, t2)


# ------------------------------------------------------------------ good runs

@pytest.mark.parametrize("track", list(TRACKS))
def test_good_run_passes(tmp_path, data, weights, clean_code, track):
    runs = make_run(tmp_path, data, track, weights)
    report = run_check(runs, data, track, clean_code)
    assert report.ok, report.lines()
    assert {(w.rule, w.where) for w in report.warnings} == {("scope", "--code"), ("scope", "--task2-code")}
    expected = set(RULES) - ({"provided-embeddings"} if get_track(track).new_embeddings else
                             {"item-info", "item-info-used", "fixed-din"})
    if get_track(track).custom_model:
        expected.discard("fixed-din")
    assert set(report.checked) == expected


def test_cli_check_exit_codes_and_json(tmp_path, data, weights, clean_code, monkeypatch, capsys):
    runs = make_run(tmp_path, data, "task1_2", weights)
    args = ["check", "--track", "task1_2", "--runs", runs, "--data-dir", data, "--code", clean_code,
            "--task2-code", clean_code]
    code, out, _ = cli(monkeypatch, capsys, *args, "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    edit(L.TrackDir.of(runs).task2_manifest, lambda d: d.update(n_models=2))
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 1
    assert "FAIL [single-model]" in err and "1 violation(s) of 1 rule(s): single-model" in out
    code, out, _ = cli(monkeypatch, capsys, *args, "--json")
    rep = json.loads(out)
    assert code == 1 and rep["broken"] == ["single-model"] and rep["violations"][0]["rule"] == "single-model"


def test_cli_bad_input_is_one_line(tmp_path, data, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "check", "--track", "task1", "--runs", tmp_path / "nope",
                         "--data-dir", data)
    assert (code == 2 and err.strip().startswith("error: runs directory not found")
            and len(err.strip().splitlines()) == 1)
    code, _, err = cli(monkeypatch, capsys, "check", "--track", "task1", "--runs", tmp_path,
                       "--data-dir", tmp_path / "nodata")
    assert code == 2 and "data directory not found" in err


# ------------------------------------------------------------------ planted violations

def broken(report) -> list:
    return report.broken


@pytest.fixture()
def run12(tmp_path, data, weights):
    return make_run(tmp_path, data, "task1_2", weights)


def test_two_models(run12, data, clean_code):
    edit(L.TrackDir.of(run12).task2_manifest, lambda d: d.update(n_models=2))
    assert broken(run_check(run12, data, "task1_2", clean_code)) == ["single-model"]


def test_averaged_predictions_declared(run12, data, clean_code):
    edit(L.TrackDir.of(run12).task2_manifest, lambda d: d["prediction"].update(checkpoints_used=3))
    rep = run_check(run12, data, "task1_2", clean_code)
    assert broken(rep) == ["no-ensemble"] and "= 3, but 1 checkpoints were loaded" in rep.violations[0].reason


def test_ensemble_in_config(run12, data, clean_code):
    edit(L.TrackDir.of(run12).task2_manifest, lambda d: d["config"].update(ensemble=5))
    assert broken(run_check(run12, data, "task1_2", clean_code)) == ["no-ensemble"]


def test_predictions_averaged_by_hand(run12, data, clean_code):
    """Blending prediction.csv with another model's scores after predict is caught by its hash."""
    lay = L.TrackDir.of(run12)
    p_click = run_prediction(run12)
    other = np.random.default_rng(1).uniform(size=p_click.size)
    write_prediction(lay.prediction, (p_click + other) / 2, get_track("task1_2").column)
    rep = run_check(run12, data, "task1_2", clean_code)
    assert broken(rep) == ["provenance"] and "averaged" in rep.violations[0].reason


@pytest.mark.parametrize("name,source", [
    ("boost.py", "import xgboost as xgb\n"),
    ("gbm.py", "from lightgbm import LGBMClassifier\n"),
    ("skl.py", "from sklearn import ensemble\n"),
    ("forest.py", "from sklearn.ensemble import RandomForestClassifier\n"),
    ("tree.py", "import sklearn.tree\n"),
    ("dyn.py", "import importlib\ncb = importlib.import_module('catboost')\n"),
])
def test_tree_library_in_py(run12, data, clean_code, name, source):
    (clean_code / "sub").mkdir()
    (clean_code / "sub" / name).write_text("import numpy\n" + source)
    rep = run_check(run12, data, "task1_2", clean_code)
    assert broken(rep) == ["no-trees"]
    assert rep.violations[0].where.endswith(f"{name}:{1 + len(source.splitlines())}")


def _notebook(path: Path, *sources) -> None:
    import nbformat
    from nbformat import v4

    nb = v4.new_notebook(cells=[v4.new_markdown_cell("import xgboost  (markdown: not code)")]
                         + [v4.new_code_cell(s) for s in sources])
    nbformat.write(nb, str(path))


def test_tree_library_in_notebook(run12, data, clean_code):
    _notebook(clean_code / "explore.ipynb", "%matplotlib inline\nimport pandas as pd",
              "x = 1\nimport xgboost as xgb\nmodel = xgb.XGBClassifier()")
    rep = run_check(run12, data, "task1_2", clean_code)
    assert broken(rep) == ["no-trees"] and len(rep.violations) == 1
    assert rep.violations[0].where.endswith("explore.ipynb[cell 2]:2")


def test_tree_library_installed_in_notebook(run12, data, clean_code):
    _notebook(clean_code / "setup.ipynb", "!pip install -q lightgbm==4.0\nimport numpy")
    assert broken(run_check(run12, data, "task1_2", clean_code)) == ["no-trees"]


def test_clean_notebook_passes(run12, data, clean_code):
    _notebook(clean_code / "ok.ipynb", "%%time\nimport numpy as np\n# import xgboost\ns = 'import lightgbm'")
    assert run_check(run12, data, "task1_2", clean_code).ok


@pytest.mark.parametrize("source", [
    "from transformers import AutoModel\n",
    "import sentence_transformers\n",
    "import timm\nnet = timm.create_model('resnet50', pretrained=True)\n",
    "from torchvision.models import resnet18, ResNet18_Weights\nm = resnet18(weights=ResNet18_Weights.DEFAULT)\n",
    "import torch\nm = torch.hub.load('pytorch/vision', 'resnet18')\n",
    "import torchvision\nm = torchvision.models.resnet18(weights='IMAGENET1K_V1')\n",
    "from mylib import Encoder\nenc = Encoder.from_pretrained('bert-base-uncased')\n",
])
def test_pretrained_model_in_task2_code(run12, data, clean_code, tmp_path, source):
    task2 = tmp_path / "task2"
    task2.mkdir()
    (task2 / "model.py").write_text(source)
    rep = run_check(run12, data, "task1_2", clean_code, task2_code=[task2])
    assert broken(rep) == ["no-pretrained-ctr"]


def test_ctr_code_without_pretrained_weights_passes(run12, data, clean_code, tmp_path):
    task2 = tmp_path / "task2"
    task2.mkdir()
    (task2 / "train.py").write_text(
        "import timm, torch\nfrom mmctr.rundir import write_manifest\n"
        "net = timm.create_model('resnet18', pretrained=False)\n"
        "write_manifest('m.json', 'task2', pretrained=[], n_models=1)\n"
        "w = torch.multinomial(torch.ones(3), 2)\nsampler = Sampler(weights=w)\n")
    assert run_check(run12, data, "task1_2", clean_code, task2_code=[task2]).ok


def test_pretrained_model_allowed_in_task1_code(run12, data, clean_code, tmp_path):
    """Task 1 may extract item features with open pretrained models: only task2 is scanned for them."""
    (clean_code / "encode.py").write_text("from transformers import AutoModel\nimport open_clip\n")
    assert run_check(run12, data, "task1_2", clean_code, task2_code=[tmp_path / "empty"]).ok is True


def test_pretrained_weights_in_task2_manifest(run12, data, clean_code):
    edit(L.TrackDir.of(run12).task2_manifest,
         lambda d: d.update(pretrained=[{"name": "bert-base", "source": "hf", "sha256": "x"}]))
    assert broken(run_check(run12, data, "task1_2", clean_code)) == ["no-pretrained-ctr"]


def test_input_outside_data_dir(run12, data, clean_code, tmp_path):
    extra = tmp_path / "elsewhere" / "extra_features.parquet"
    extra.parent.mkdir()
    extra.write_bytes(b"more data")
    edit(L.TrackDir.of(run12).task2_manifest, lambda d: d["inputs"].update({str(extra): file_sha256(extra)}))
    rep = run_check(run12, data, "task1_2", clean_code)
    assert broken(rep) == ["inputs-in-data"] and str(extra) in rep.violations[0].where


def test_undeclared_weights_in_task1(run12, data, clean_code, tmp_path):
    """Declared weights outside the data dir pass (the good run has one); undeclared ones do not."""
    other = tmp_path / "other_model.bin"
    other.write_bytes(b"undeclared")
    edit(L.TrackDir.of(run12).task1_manifest, lambda d: d["inputs"].update({str(other): file_sha256(other)}))
    assert broken(run_check(run12, data, "task1_2", clean_code)) == ["inputs-in-data"]


def _info_table(ids, tags, emb) -> pa.Table:
    return pa.table({C.ITEM_ID: pa.array(ids, type=pa.int64()),
                     C.ITEM_TAGS: pa.array([list(map(int, r)) for r in tags], type=pa.list_(pa.int64())),
                     C.ITEM_EMB: pa.array([list(map(float, r)) for r in emb], type=pa.list_(pa.float32()))},
                    schema=C.ITEM_INFO_ARROW)


@pytest.mark.parametrize("plant,needle", [
    ("dim127", "list length is not 128"),
    ("shuffled", "row order broken"),
    ("row0", "row 0 (padding) must be all zero"),
    ("fewer_rows", "misaligned"),
    ("tags", "differs from the provided item_tags"),
    ("nan", "NaN"),
])
def test_bad_item_info(run12, data, clean_code, plant, needle):
    tags, emb = map(np.array, read_item_info(L.TrackDir.of(run12).item_info))
    ids = np.arange(len(emb))
    if plant == "dim127":
        emb = emb[:, :127]
    elif plant == "shuffled":
        perm = np.r_[0, np.random.default_rng(0).permutation(np.arange(1, len(ids)))]
        ids, tags, emb = ids[perm], tags[perm], emb[perm]
    elif plant == "row0":
        emb[0] = 0.5
    elif plant == "fewer_rows":
        ids, tags, emb = ids[:-10], tags[:-10], emb[:-10]
    elif plant == "tags":
        tags[5] = [1, 2, 3, 4, 5]
    elif plant == "nan":
        emb[7, 3] = np.nan
    replace_item_info(run12, _info_table(ids, tags, emb))
    rep = run_check(run12, data, "task1_2", clean_code)
    # the checkpoint may no longer re-score its prediction over a planted item_info (provenance)
    assert set(broken(rep)) - {"provenance"} == {"item-info"}, rep.lines()
    assert any(needle in v.reason for v in rep.violations), rep.lines()


def test_item_info_changed_after_task1(run12, data, clean_code):
    lay = L.TrackDir.of(run12)
    tags, emb = read_item_info(lay.item_info)
    write_item_info(lay.item_info, tags, emb * 2)  # edited by hand after task1 and task2 ran
    rep = run_check(run12, data, "task1_2", clean_code)
    assert broken(rep) == ["item-info-used", "provenance"], rep.lines()


def test_task2_trained_on_other_item_info(run12, data, clean_code):
    """Task-1 tracks: the CTR model must have used the checked item_info, not another one."""
    official = DataPaths.resolve(data).table(C.ITEM_INFO)
    edit(L.TrackDir.of(run12).task2_manifest,
         lambda d: d["item_info"].update(path=str(official), sha256=file_sha256(official)))
    assert set(broken(run_check(run12, data, "task1_2", clean_code))) - {"provenance"} == {"item-info-used"}


@pytest.mark.parametrize("key,value", [
    ("embedding_dim", 32), ("dnn_hidden_units", [512, 256]), ("attention_dropout", 0.2),
    ("model", "dcnv2"), ("max_len", 100), ("batch_norm", False)])
def test_task1_track_fixed_hyperparameter_changed(tmp_path, data, weights, clean_code, key, value):
    runs = make_run(tmp_path, data, "task1", weights, config=din_config(**{key: value}))
    rep = run_check(runs, data, "task1", clean_code)
    assert broken(rep) == ["fixed-din"] and rep.violations[0].where.endswith(f"config.{key}")


def test_task1_track_fixed_hyperparameter_missing(tmp_path, data, weights, clean_code):
    cfg = din_config()
    del cfg["grad_clip_norm"]
    assert broken(run_check(make_run(tmp_path, data, "task1", weights, config=cfg), data, "task1",
                            clean_code)) == ["fixed-din"]


def test_task1_track_tunable_and_runtime_changes_pass(tmp_path, data, weights, clean_code):
    tuned = {"embedding_regularizer": 1e-7, "net_regularizer": 1e-5, "net_dropout": 0.1,
             "learning_rate": 5e-4, "batch_size": 8192}
    assert set(tuned) == set(TASK1_TUNABLE)
    cfg = din_config(**tuned, max_epochs=50, eval_batch_size=8192, log_every=100, compile=True)
    rep = run_check(make_run(tmp_path, data, "task1", weights, config=cfg), data, "task1", clean_code)
    assert rep.ok, rep.lines()


def test_fixed_din_against_task2s_own_config_loader(tmp_path, data, weights, clean_code):
    """Configs as task2 really records them: tunable overrides pass, anything else is caught."""
    t2config = pytest.importorskip("task2.config")

    def rules_broken(i, **over):
        cfg = t2config.load_config("din_baseline", over).learned()
        runs = make_run(tmp_path / str(i), data, "task1", weights, config=cfg)
        return broken(run_check(runs, data, "task1", clean_code))

    assert rules_broken(0, learning_rate=5e-4, net_dropout=0.1, batch_size=8192, max_epochs=3) == []
    assert rules_broken(1, embedding_dim=32) == ["fixed-din"]
    assert rules_broken(2, din_use_softmax=True) == ["fixed-din"]


def test_custom_model_allowed_outside_task1_track(tmp_path, data, weights, clean_code):
    """The same changed DIN is fine when the track allows a custom model."""
    runs = make_run(tmp_path, data, "task1_2", weights, config=din_config(embedding_dim=32))
    assert run_check(runs, data, "task1_2", clean_code).ok


def test_task2_track_changed_embeddings(tmp_path, data, weights, clean_code):
    runs = make_run(tmp_path, data, "task2", weights)
    official = DataPaths.resolve(data).table(C.ITEM_INFO)
    tags, emb = read_item_info(official)
    mine = tmp_path / "my_item_info.parquet"
    write_item_info(mine, tags, emb + 0.01)
    edit(L.TrackDir.of(runs).task2_manifest, lambda d: d["item_info"].update(path=str(mine), sha256=file_sha256(mine)))
    rep = run_check(runs, data, "task2", clean_code)
    assert "provided-embeddings" in broken(rep)
    # and reading it from outside the data/runs dirs is its own violation
    assert set(broken(rep)) - {"provenance"} == {"provided-embeddings", "inputs-in-data"}


@pytest.mark.parametrize("how", ["path", "copy", "labels"])
def test_test_rows_in_training(run12, data, clean_code, how):
    paths = DataPaths.resolve(data)
    if how == "path":
        p = paths.table(C.TEST)
    elif how == "copy":  # a copy of test.parquet inside the runs dir: same hash
        p = run12 / "task2" / "extra.parquet"
        shutil.copy(paths.table(C.TEST), p)
    else:
        p = paths.root / TRUTH_DIR / "test.parquet"
    edit(L.TrackDir.of(run12).task2_manifest, lambda d: d["inputs"].update({str(p): file_sha256(p)}))
    assert broken(run_check(run12, data, "task1_2", clean_code)) == ["no-test-in-training"]


def test_missing_manifest(run12, data, clean_code):
    L.TrackDir.of(run12).task2_manifest.unlink()
    rep = run_check(run12, data, "task1_2", clean_code)
    assert "manifest" in broken(rep) and "run manifest not found" in rep.violations[0].reason


def test_prediction_for_another_track(run12, data, clean_code):
    lay = L.TrackDir.of(run12)
    write_prediction(lay.prediction, run_prediction(run12), get_track("task2").column)
    restamp_prediction(run12)
    edit(lay.task2_manifest, lambda d: d["prediction"].update(track="task2", column="Task2"))
    rep = run_check(run12, data, "task1_2", clean_code)
    assert broken(rep) == ["prediction"]
    assert any("is the task2 track's" in v.reason for v in rep.violations)


def test_kit_code_follows_its_own_rules():
    """Every tracked .py/.ipynb of the repo has no banned import (task2 also no pretrained model)."""
    from submission.scan import scan_file, tracked_sources

    tracked, links = tracked_sources(REPO)
    assert "submission/rules.py" in tracked and links == []
    hits = [h for n in tracked for h in scan_file(REPO / n, pretrained=n.startswith("task2/"), display=n)
            if h.kind in ("tree", "pretrained")]
    assert hits == []


def test_scanner_does_not_flag_its_own_tables():
    from submission.scan import scan_tree

    assert scan_tree(REPO / "submission", pretrained=True) == []


# ------------------------------------------------------------------ pack and score

def test_pack_writes_zip_that_scores_the_oracle_auc(tmp_path, data, weights, clean_code, monkeypatch, capsys):
    runs = make_run(tmp_path, data, "task1_2", weights)
    out = runs / "submission.zip"
    code, stdout, err = cli(monkeypatch, capsys, "pack", "--track", "task1_2", "--runs", runs, "--data-dir", data,
                            "--out", out, "--code", clean_code, "--task2-code", clean_code)
    assert code == 0, err
    assert stdout.startswith("ok: ")
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == [C.SUBMISSION_FILE]
        header = zf.read(C.SUBMISSION_FILE).decode().splitlines()[0]
    assert header == f"{C.SUBMISSION_ID},{C.TRACK_COLUMNS['task1_2']}"
    _, labels = read_truth(data, "test")
    oracle = roc_auc(labels, np.round(run_prediction(runs), 8))
    assert score(out, labels, "task1_2") == oracle
    assert score(out, labels) == oracle  # the one column present
    assert score(out, labels, "task2") == 0.0  # missing column scores 0
    assert score(out, labels[::-1].copy(), "task1_2") != oracle

    bundle = runs / "submission_repro.zip"
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        reproduce = zf.read("REPRODUCE.md").decode()
        run_sh = zf.read("run.sh").decode()
        t2cfg = yaml.safe_load(zf.read("run/configs/task2.yaml"))
        report = json.loads(zf.read("run/check_report.json"))
    for n in ("code/submission/cli.py", "code/Makefile", "code/mmctr/contract.py", "requirements.lock",
              "environment.yml", "run/task1/item_info.manifest.json", "run/task2/manifest.json",
              "run/configs/task1.yaml", "run.sh", "REPRODUCE.md", "run/environment.json"):
        assert n in names, n
    assert not any(n.startswith(("code/.venv", "code/data/", "code/runs/")) for n in names)
    assert "make track12" in reproduce and str(data) not in run_sh and "make track12" in run_sh
    assert "python -m task2 predict" in reproduce and "--track task1_2" in reproduce
    doc = read_manifest(L.TrackDir.of(runs).task2_manifest)
    assert t2cfg == {**doc["config"], **doc["runtime"]}
    assert "config_source" not in t2cfg and t2cfg["model"] == "mmctr" and t2cfg["max_epochs"] == 1
    assert report["ok"] is True


def test_score_cli_subprocess(tmp_path, data, weights, clean_code):
    """The real `python -m submission` entry point: pack then score a zip from the sample."""
    runs = make_run(tmp_path, data, "task2", weights)
    out = tmp_path / "sub.zip"
    env_cmd = [sys.executable, "-m", "submission"]
    res = subprocess.run(env_cmd + ["pack", "--track", "task2", "--runs", str(runs), "--data-dir", str(data),
                                    "--out", str(out), "--code", str(clean_code), "--task2-code", str(clean_code)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    res = subprocess.run(env_cmd + ["score", "--zip", str(out), "--data-dir", str(data)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    _, labels = read_truth(data, "test")
    auc = roc_auc(labels, np.round(run_prediction(runs), 8))
    assert res.returncode == 0 and res.stdout.strip() == f"AUC {auc:.6f}"


def test_pack_refuses_a_run_that_breaks_a_rule(tmp_path, data, weights, clean_code, monkeypatch, capsys):
    runs = make_run(tmp_path, data, "task1_2", weights)
    edit(L.TrackDir.of(runs).task2_manifest, lambda d: d.update(n_models=2))
    out = runs / "submission.zip"
    code, _, err = cli(monkeypatch, capsys, "pack", "--track", "task1_2", "--runs", runs, "--data-dir", data,
                       "--out", out, "--code", clean_code, "--task2-code", clean_code)
    assert code == 2 and "single-model" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _bad_prediction(kind: str, p: np.ndarray, path: Path) -> None:
    col = C.TRACK_COLUMNS["task1_2"]
    p = p.copy()
    if kind == "rows":
        write_prediction(path, p[:-1], col)
    elif kind == "ids":
        ids = np.arange(p.size)
        ids[[10, 11]] = ids[[11, 10]]
        write_prediction(path, p, col, ids=ids)
    elif kind == "nan":
        p[5] = np.nan
        write_prediction(path, p, col)
    elif kind == "above1":
        p[3] = 1.5
        write_prediction(path, p, col)
    elif kind == "negative":
        p[4] = -0.1
        write_prediction(path, p, col)
    elif kind == "column":
        write_prediction(path, p, C.TRACK_COLUMNS["task2"])
    elif kind == "renamed":
        write_prediction(path, p, "score")
    elif kind == "extra":
        write_prediction(path, p, col)
        lines = path.read_text().splitlines()
        path.write_text("\n".join(line + ",x" for line in lines) + "\n")
    elif kind == "text":
        write_prediction(path, p, col)
        lines = path.read_text().splitlines()
        lines[8] = "7,high"
        path.write_text("\n".join(lines) + "\n")
    elif kind == "missing":
        pass


@pytest.mark.parametrize("kind,needle", [
    ("rows", "799 rows, but test.parquet has 800"),
    ("ids", "ID at row 10 is 11, expected 10"),
    ("nan", "row 5 is 'nan', not a finite number"),
    ("above1", "row 3 is 1.5, outside [0, 1]"),
    ("negative", "row 4 is -0.1, outside [0, 1]"),
    ("column", "'Task2' is the task2 track's"),
    ("renamed", "the header must be exactly 'ID,Task1&2'"),
    ("extra", "the header must be exactly"),
    ("text", "row 7 is 'high', not a finite number"),
    ("missing", "prediction.csv not found"),
])
def test_pack_rejects_bad_prediction(tmp_path, data, weights, monkeypatch, capsys, kind, needle):
    runs = make_run(tmp_path, data, "task1_2", weights)
    p_click = run_prediction(runs)
    bad = tmp_path / "bad" / C.SUBMISSION_FILE
    bad.parent.mkdir()
    _bad_prediction(kind, p_click, bad)
    out = tmp_path / "sub.zip"
    code, _, err = cli(monkeypatch, capsys, "pack", "--track", "task1_2", "--runs", runs, "--data-dir", data,
                       "--out", out, "--prediction", bad)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert needle in err, err
    assert not out.exists() and not (tmp_path / "sub_repro.zip").exists()

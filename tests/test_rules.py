"""submission.rules: a submission that `check` calls ok is ok, and a run folder is safe to open.

Runs are fabricated as task2 train/predict write them today (paths relative to the data root and
the run dir, a real DIN checkpoint saved through task2.checkpoint, the prediction that this
checkpoint makes, `checkpoints_loaded`), so every rule here looks at what ran.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.io import file_sha256
from mmctr import rundir as L
from mmctr.paths import DataPaths, refuse_data_write
from mmctr.sample import SampleConfig, generate
from mmctr.tracks import FIXED_DIN, TRACKS, fixed_din_config
from submission.rules import check
from task2.config import load_config
from task2.train import train_model

from runs_factory import cli, edit, make_run, restamp_prediction, run_check

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    generate(root, SampleConfig(n_items=120, n_users=200, n_train=1500, n_valid=300, n_test=400, image_size=16,
                                workers=1))
    return root


@pytest.fixture()
def clean_code(tmp_path) -> Path:
    d = tmp_path / "code"
    d.mkdir()
    (d / "train.py").write_text("import numpy as np\n# xgboost is not used\nBANNED = ('xgboost',)\n")
    return d



def pack_args(track, runs, data, out, code, *extra):
    return ("pack", "--track", track, "--runs", runs, "--data-dir", data, "--out", out, "--code", code,
            "--task2-code", code, *extra)


@pytest.fixture()
def run1(tmp_path, data):
    return make_run(tmp_path, data, "task1")


@pytest.fixture()
def run12(tmp_path, data):
    return make_run(tmp_path, data, "task1_2")


# ------------------------------------------------------------------ honest runs pass (no false alarms)

@pytest.mark.parametrize("track", list(TRACKS))
def test_honest_run_passes(tmp_path, data, clean_code, track):
    report = run_check(make_run(tmp_path, data, track), data, track, clean_code)
    assert report.ok, report.lines()


def _symlinked_data(data: Path, where: Path) -> Path:
    """A data dir made of symlinks: every file links to the real one elsewhere."""
    for p in sorted(data.rglob("*")):
        if p.is_file():
            q = where / p.relative_to(data)
            q.parent.mkdir(parents=True, exist_ok=True)
            q.symlink_to(p)
    return where


def test_data_dir_made_of_symlinks_is_no_false_alarm(tmp_path, data, clean_code):
    links = _symlinked_data(data, tmp_path / "links")
    runs = make_run(tmp_path, links, "task1")
    report = run_check(runs, links, "task1", clean_code)
    assert report.ok, report.lines()
    refuse_data_write(tmp_path / "runs" / "x.zip", links)  # outside: no alarm


def test_moved_runs_dir_is_no_false_alarm(tmp_path, data, clean_code):
    runs = make_run(tmp_path, data, "task1_2")
    moved = tmp_path / "elsewhere" / "runs12"
    moved.parent.mkdir()
    shutil.move(str(runs), moved)
    report = run_check(moved, data, "task1_2", clean_code)
    assert report.ok, report.lines()


def test_side_prediction_is_no_false_alarm(run12, data, clean_code):
    lay = L.TrackDir.of(run12)
    side = run12.parent / "other.csv"
    shutil.copy(lay.prediction, side)
    edit(lay.task2_manifest, lambda d: d.update(side_predictions=[{"path": "../../other.csv",
                                                                    "sha256": file_sha256(side)}]))
    assert run_check(run12, data, "task1_2", clean_code).ok


# ------------------------------------------------------------------ pack ships what check saw

def _zip_prediction(out: Path) -> str:
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == [C.SUBMISSION_FILE]
        return zf.read(C.SUBMISSION_FILE).decode()


def test_pack_refuses_another_prediction(run12, data, clean_code, tmp_path, monkeypatch, capsys):
    lay = L.TrackDir.of(run12)
    text = lay.prediction.read_text().splitlines()
    blended = tmp_path / "blended.csv"
    rng = np.random.default_rng(1)
    blended.write_text("\n".join([text[0]] + [f"{i},{(float(line.split(',')[1]) + rng.random()) / 2:.8f}"
                                              for i, line in enumerate(text[1:])]) + "\n")
    out = tmp_path / "sub.zip"
    code, _, err = cli(monkeypatch, capsys, *pack_args("task1_2", run12, data, out, clean_code,
                                                       "--prediction", blended))
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "not the prediction" in err
    assert not out.exists() and not (tmp_path / "sub_repro.zip").exists()


def test_pack_ships_a_canonical_copy_of_the_checked_prediction(run12, data, clean_code, tmp_path,
                                                               monkeypatch, capsys):
    lay = L.TrackDir.of(run12)
    copy = tmp_path / "same.csv"
    shutil.copy(lay.prediction, copy)
    out = tmp_path / "sub.zip"
    code, _, err = cli(monkeypatch, capsys, *pack_args("task1_2", run12, data, out, clean_code, "--prediction", copy))
    assert code == 0, err
    lines = _zip_prediction(out).split("\n")
    col = C.TRACK_COLUMNS["task1_2"]
    assert lines[0] == f"ID,{col}" and lines[-1] == "" and len(lines) == 402
    want = np.loadtxt(lay.prediction, delimiter=",", skiprows=1)[:, 1]
    assert lines[1:-1] == [f"{i},{p:.8f}" for i, p in enumerate(want)]


@pytest.mark.parametrize("kind,needle", [
    ("three_fields", "3 fields"),
    ("blank_line", "blank line"),
    ("float_id", "'0.0'"),
    ("quoted", "quoted"),
    ("nan", "not a finite number"),
    ("above1", "outside [0, 1]"),
    ("spaces", "' 0.5'"),
    ("bom", "header"),
])
def test_malformed_prediction_is_refused_by_check_and_pack(run12, data, clean_code, tmp_path, monkeypatch,
                                                           capsys, kind, needle):
    lay = L.TrackDir.of(run12)
    lines = lay.prediction.read_text().split("\n")
    if kind == "three_fields":
        lines[5] += ",0.3"
    elif kind == "blank_line":
        lines.insert(7, "")
    elif kind == "float_id":
        lines[1] = "0.0," + lines[1].split(",")[1]
    elif kind == "quoted":
        lines[3] = '"2","0.5"'
    elif kind == "nan":
        lines[4] = "3,nan"
    elif kind == "above1":
        lines[4] = "3,1.00001"
    elif kind == "spaces":
        lines[2] = "1, 0.5"
    elif kind == "bom":
        lines[0] = "\ufeff" + lines[0]
    lay.prediction.write_text("\n".join(lines))
    restamp_prediction(run12)  # a hash recomputed by hand: only the parser can catch it
    report = run_check(run12, data, "task1_2", clean_code)
    assert "prediction" in report.broken, report.lines()
    assert any(needle in v.reason for v in report.violations), report.lines()
    out = tmp_path / "sub.zip"
    code, _, err = cli(monkeypatch, capsys, *pack_args("task1_2", run12, data, out, clean_code))
    assert code == 2 and not out.exists()


def test_pack_replaces_zip_and_bundle_together_or_not_at_all(run12, data, clean_code, tmp_path, monkeypatch):
    import submission.pack as pack_mod

    out = tmp_path / "sub.zip"
    bundle = tmp_path / "sub_repro.zip"
    out.write_bytes(b"old zip")
    bundle.write_bytes(b"old bundle")

    def boom(*a, **k):
        raise KitError("killed between the two writes")

    with monkeypatch.context() as m:  # dies after the zip is written, before the bundle
        m.setattr(pack_mod, "write_bundle", boom)
        with pytest.raises(KitError):
            pack_mod.pack("task1_2", run12, data, out, code_dirs=[clean_code], task2_code=[clean_code])
    assert out.read_bytes() == b"old zip" and bundle.read_bytes() == b"old bundle"

    real_replace, calls = os.replace, []

    def second_replace_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_replace(src, dst)

    with monkeypatch.context() as m:  # dies between the two renames
        m.setattr(pack_mod.os, "replace", second_replace_fails)
        with pytest.raises((KitError, OSError)):
            pack_mod.pack("task1_2", run12, data, out, code_dirs=[clean_code], task2_code=[clean_code])
    assert out.read_bytes() == b"old zip" and bundle.read_bytes() == b"old bundle"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("sub")) == ["sub.zip", "sub_repro.zip"]
    pack_mod.pack("task1_2", run12, data, out, code_dirs=[clean_code], task2_code=[clean_code])
    assert zipfile.is_zipfile(out) and zipfile.is_zipfile(bundle)


# ------------------------------------------------------------------ the repro bundle

def _git_repo(root: Path) -> Path:
    root.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    outside = root.parent / "outside_secret.txt"
    outside.write_text("SECRET BYTES")
    (root / "train.py").write_text("print('hi')\n")
    (root / "scripts").mkdir()
    (root / "scripts" / "run.py").write_text("print('run')\n")
    (root / "link.py").symlink_to(outside)
    (root / ".env").write_text("API_KEY=1")
    (root / "hf_token.txt").write_text("hf_x")
    (root / "deploy.pem").write_text("-----BEGIN")
    (root / "id_rsa").write_text("key")
    (root / "my_secrets.yaml").write_text("a: 1")
    (root / "credentials.json").write_text("{}")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=root, check=True, env=env)
    (root / "untracked.py").write_text("print('not tracked')\n")
    (root / ".env.local").write_text("TOKEN=2")
    return root


def test_bundle_code_is_tracked_files_only_no_symlinks_no_secrets(tmp_path):
    from submission.pack import code_files

    repo = _git_repo(tmp_path / "repo")
    kept, left_out = code_files(repo)
    assert kept == ["scripts/run.py", "train.py"]
    assert set(left_out) == {"link.py", ".env", "hf_token.txt", "deploy.pem", "id_rsa", "my_secrets.yaml",
                             "credentials.json", "untracked.py", ".env.local"}
    assert "symlink" in left_out["link.py"] and "secret" in left_out[".env"]
    assert "not tracked by git" in left_out["untracked.py"]  # named, never silently dropped


def test_bundle_records_no_absolute_paths(run12, data, clean_code, tmp_path, monkeypatch, capsys):
    out = tmp_path / "sub.zip"
    code, _, err = cli(monkeypatch, capsys, *pack_args("task1_2", run12, data, out, clean_code))
    assert code == 0, err
    needles = [str(tmp_path), str(data), str(REPO), str(Path.home())]
    with zipfile.ZipFile(tmp_path / "sub_repro.zip") as zf:
        names = zf.namelist()
        for n in names:
            if n.startswith("code/") or n == "run/pip-freeze.txt":
                continue
            text = zf.read(n).decode("utf-8", "replace")
            for s in needles:
                assert s not in text, f"{n} holds the absolute path {s}"
        run_sh = zf.read("run.sh").decode()
        manifest = json.loads(zf.read("run/task2/manifest.json"))
    assert "DATA:?" in run_sh  # the data dir is asked for, never a path of the packing machine
    assert manifest["prediction"]["path"] == C.SUBMISSION_FILE
    assert not any(n.startswith("code/tests/") and n.endswith(".env") for n in names)


# ------------------------------------------------------------------ the data dir is read-only

def test_pack_refuses_an_output_inside_the_data_dir(run12, data, clean_code, monkeypatch, capsys):
    out = DataPaths.resolve(data).ctr_dir / "submission.zip"
    code, _, err = cli(monkeypatch, capsys, *pack_args("task1_2", run12, data, out, clean_code))
    assert code == 2 and "inside the data directory" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_pack_refuses_a_symlinked_output_into_the_data_dir(run12, data, clean_code, tmp_path, monkeypatch, capsys):
    link = tmp_path / "outdir"
    link.symlink_to(DataPaths.resolve(data).ctr_dir)
    out = link / "submission.zip"
    code, _, err = cli(monkeypatch, capsys, *pack_args("task1_2", run12, data, out, clean_code))
    assert code == 2 and "inside the data directory" in err
    assert not (DataPaths.resolve(data).ctr_dir / "submission.zip").exists()


def test_guard_follows_a_data_dir_made_of_symlinks(tmp_path, data):
    links = _symlinked_data(data, tmp_path / "links")
    real_train = DataPaths.resolve(data).table(C.TRAIN)
    with pytest.raises(KitError, match="inside the data directory"):  # the file a link points at
        refuse_data_write(real_train, links)
    with pytest.raises(KitError, match="inside the data directory"):
        refuse_data_write(links / C.CTR_DIR / "new.csv", links)
    via = tmp_path / "via.parquet"
    via.symlink_to(real_train)
    with pytest.raises(KitError, match="inside the data directory"):
        refuse_data_write(via, links)


# ------------------------------------------------------------------ no-test-in-training compares content

def _copy_data(data: Path, to: Path) -> Path:
    shutil.copytree(data, to)
    return to


@pytest.mark.parametrize("split", ["train", "valid"])
def test_test_rows_copied_into_training_are_caught(tmp_path, data, clean_code, split):
    d = _copy_data(data, tmp_path / "data")
    runs = make_run(tmp_path, d, "task1_2")
    paths = DataPaths.resolve(d)
    table = C.TRAIN if split == "train" else C.VALID
    test = pq.read_table(paths.table(C.TEST))
    rows = test.slice(10, 25).append_column(C.LABEL, pa.array(np.ones(25), pa.float64()))
    target = pq.read_table(paths.table(table))
    pq.write_table(pa.concat_tables([target, rows.select(target.column_names).cast(target.schema)]),
                   paths.table(table))
    sha = file_sha256(paths.table(table))
    edit(L.TrackDir.of(runs).task2_manifest,
         lambda doc: (doc["inputs"].update({table.relpath: sha}), doc["data_files"].update({table.relpath: sha})))
    report = run_check(runs, d, "task1_2", clean_code)
    assert report.broken == ["no-test-in-training"], report.lines()
    assert any("25 test rows" in v.reason for v in report.violations), report.lines()


def test_row_hash_matches_exact_tuples_only():
    from submission.overlap import row_hashes

    t = pa.table({C.USER_ID: [1, 1, 2], C.ITEM_SEQ: [[1, 2], [2, 1], [1, 2]], C.ITEM_ID: [5, 5, 5],
                  C.LIKES: [0, 0, 0], C.VIEWS: [1, 1, 1]})
    h = row_hashes(t)
    assert len(set(h.tolist())) == 3  # order of the history and the user both count
    t2 = pa.table({C.USER_ID: [1], C.ITEM_SEQ: [[1, 2]], C.ITEM_ID: [5], C.LIKES: [0], C.VIEWS: [1]})
    assert row_hashes(t2)[0] == h[0]
    t3 = pa.table({C.USER_ID: [1], C.ITEM_SEQ: [[1, 2, 0]], C.ITEM_ID: [5], C.LIKES: [0], C.VIEWS: [1]})
    assert row_hashes(t3)[0] != h[0]


# ------------------------------------------------------------------ the scan

def _tracked_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "scripts").mkdir()
    (repo / "scripts" / "boost.py").write_text("import lightgbm\n")
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": "%pip install xgboost\nimport numpy"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (repo / "explore.ipynb").write_text(json.dumps(nb))
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    return repo


def test_narrowed_scope_cannot_hide_tracked_files(run12, data, clean_code, tmp_path, monkeypatch):
    import submission.rules as rules_mod

    monkeypatch.setattr(rules_mod, "REPO_ROOT", _tracked_repo(tmp_path))
    report = check("task1_2", run12, data, code_dirs=[clean_code], task2_code=[clean_code])
    hits = {v.where.split(":")[0].split("[")[0] for v in report.violations if v.rule == "no-trees"}
    assert hits == {"scripts/boost.py", "explore.ipynb"}, report.lines()
    narrowed = [w for w in report.warnings if w.rule == "scope"]
    assert {w.where for w in narrowed} >= {"--code", "--task2-code"}, report.lines()


@pytest.mark.parametrize("source", [
    "import importlib\nm = importlib.import_module('light' + 'gbm')\n",
    "name = input()\nm = __import__(name)\n",
    "exec('import xgboost')\n",
    "eval(\"__import__('catboost')\")\n",
    "code = compile('import sklearn.ensemble', 'x', 'exec')\n",
    "import importlib as il\nm = il.import_module(f'{\"xg\"}boost')\n",
    "s = 'import ' + 'xgboost'\nexec(s)\n",
    "import importlib\nm = getattr(importlib, 'import_module')('xgboost')\n",
    "import builtins\nbuiltins.exec('import lightgbm')\n",
    "import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import xgboost; print(1)'])\n",
    "import os\nos.system('pip install catboost')\n",
])
def test_dynamic_imports_and_exec_are_flagged(run12, data, clean_code, source):
    (clean_code / "sneaky.py").write_text(source)
    report = run_check(run12, data, "task1_2", clean_code)
    assert "no-trees" in report.broken, (source, report.lines())


def test_resolvable_dynamic_import_of_allowed_modules_passes(run12, data, clean_code):
    (clean_code / "env.py").write_text(
        "PACKAGED = {'a': 'numpy'}\n"
        "for mod in ('numpy', 'pyarrow'):\n    __import__(mod)\n"
        "def f(k):\n    module = PACKAGED.get(k)\n    return __import__(module)\n")
    assert run_check(run12, data, "task1_2", clean_code).ok


def test_check_records_a_narrowed_din_config(run1, data, clean_code, tmp_path):
    import yaml

    edited = tmp_path / "din.yaml"
    edited.write_text(yaml.safe_dump({**fixed_din_config()["net"], "dnn_hidden_units": [2048, 1024]}))
    edit(L.TrackDir.of(run1).task2_manifest, lambda d: d["config"].update(dnn_hidden_units=[2048, 1024]))
    report = run_check(run1, data, "task1", clean_code, din_config=edited)
    assert "fixed-din" in report.broken  # frozen values, not the YAML pointed at
    assert any(w.rule == "scope" and w.where == "--din-config" for w in report.warnings)


# ------------------------------------------------------------------ fixed DIN, frozen

def test_frozen_fixed_din_values_match_the_challenge():
    cfg = fixed_din_config()
    assert cfg["net"] == {"embedding_dim": 64, "dnn_hidden_units": [1024, 512, 256], "dnn_activations": "relu",
                          "attention_hidden_units": [512, 256], "attention_activation": "relu",
                          "attention_dropout": 0.1, "din_use_softmax": False, "batch_norm": True,
                          "net_dropout": 0.1}
    assert cfg["train"] == {"learning_rate": 1e-3, "batch_size": 8192, "embedding_regularizer": 1e-6,
                            "net_regularizer": 0.0, "max_len": 64, "early_stop_patience": 3,
                            "lr_decay_factor": 0.1, "grad_clip_norm": 10.0, "seed": 20242025,
                            "evals_per_epoch": 1}
    assert FIXED_DIN.tunable == ("embedding_regularizer", "net_regularizer", "net_dropout", "learning_rate",
                                 "batch_size")


@pytest.mark.parametrize("key, change", [("evals_per_epoch", {"evals_per_epoch": 4}),
                                         ("evals_per_epoch", "drop")])
def test_fixed_din_keeps_fuxictr_validation_and_decay(run1, data, clean_code, key, change):
    """Validating inside the epoch picks another checkpoint: not one of the Task-1 track's five keys."""
    def apply(d):
        if isinstance(change, dict):
            d["config"].update(change)
        else:
            d["config"].pop(key)
    edit(L.TrackDir.of(run1).task2_manifest, apply)
    report = run_check(run1, data, "task1", clean_code)
    assert "fixed-din" in report.broken
    assert any(key in v.where for v in report.violations if v.rule == "fixed-din")


def test_fixed_din_ignores_an_edited_yaml_and_task2_defaults(run1, data, clean_code, monkeypatch, tmp_path):
    import task2.models.din as din_mod

    edit(L.TrackDir.of(run1).task2_manifest, lambda d: d["config"].update(attention_dropout=0.3))
    monkeypatch.setitem(din_mod.DEFAULTS, "attention_dropout", 0.3)
    report = run_check(run1, data, "task1", clean_code)
    assert "fixed-din" in report.broken


def test_changed_din_architecture_in_the_checkpoint_fails(tmp_path, data, clean_code):
    def widen(state, model):  # din.py edited: an extra layer the YAML does not show
        state["model"]["dnn.12.weight"] = torch.zeros(1, 256)
        state["model"]["dnn.13.weight"] = torch.zeros(8, 8)

    runs = make_run(tmp_path, data, "task1", state_hook=widen)
    report = run_check(runs, data, "task1", clean_code)
    assert "fixed-din" in report.broken, report.lines()


def test_changed_din_code_fails(run1, data, clean_code, monkeypatch):
    import task2.models.din as din_mod

    monkeypatch.setattr(din_mod.nn, "ReLU", torch.nn.GELU)  # din.py edited: another activation
    report = run_check(run1, data, "task1", clean_code)
    assert "fixed-din" in report.broken, report.lines()


# ------------------------------------------------------------------ fixed DIN: the manifest's `resumed` record

KEY = "lr_decay_factor"  # frozen at 0.1 for the fixed DIN, may change on --resume


def _fixed_din_violations(runs, data, clean_code) -> list:
    report = run_check(runs, data, "task1", clean_code)
    return [v for v in report.violations if v.rule == "fixed-din"]


@pytest.fixture(scope="module")
def din_bent_then_resumed(data, tmp_path_factory):
    """The fixed DIN trained with another lr_decay_factor, then `--resume`d with the frozen value and
    no epoch left to train: the kit's own manifest of a run that bent the rule."""
    out = tmp_path_factory.mktemp("din") / "task2"
    over = {"batch_size": 256, "num_threads": 1, "max_epochs": 1}
    train_model(load_config("din_baseline", {**over, KEY: 0.5}), data, None, out, quiet=True)
    train_model(load_config("din_baseline", over), data, None, out, quiet=True, resume=True)
    return json.loads((out / "manifest.json").read_text())


def test_resume_to_the_frozen_values_does_not_hide_a_bent_rule(din_bent_then_resumed, data, tmp_path,
                                                               clean_code):
    """The final config reads the frozen values; `resumed` records that the DIN trained with
    another one. The rule check must read that record."""
    m = din_bent_then_resumed
    assert m["config"][KEY] == 0.1
    assert m["resumed"][-1]["changed"] == {KEY: [0.5, 0.1]}
    runs = make_run(tmp_path, data, "task1", config=m["config"])
    assert run_check(runs, data, "task1", clean_code).ok  # the same config without the record passes
    edit(L.TrackDir.of(runs).task2_manifest, lambda d: d.update(resumed=m["resumed"]))
    assert any(v.where.endswith(f"resumed.{KEY}") for v in _fixed_din_violations(runs, data, clean_code))


@pytest.mark.parametrize("key, old, new", [("lr_decay_factor", 0.5, 0.1),
                                           ("early_stop_patience", 10, 3),
                                           ("grad_clip_norm", 0.0, 10.0)])
def test_rule_check_flags_a_frozen_key_changed_on_resume(run1, data, clean_code, key, old, new):
    edit(L.TrackDir.of(run1).task2_manifest,
         lambda d: d.update(resumed=[{"from_epoch": 2, "changed": {key: [old, new]}}]))
    assert any(v.where.endswith(f"resumed.{key}") for v in _fixed_din_violations(run1, data, clean_code))


def test_rule_check_warns_of_a_tunable_key_changed_on_resume(run1, data, clean_code):
    """One of the five keys changed mid-run is a hand-made schedule, not a tuned value: a warning."""
    edit(L.TrackDir.of(run1).task2_manifest, lambda d: d.update(resumed=[
        {"from_epoch": 2, "changed": {"learning_rate": [1e-3, 1e-4]}}, {"from_epoch": 3, "changed": {}}]))
    report = run_check(run1, data, "task1", clean_code)
    assert report.ok
    assert [w.where.rsplit(":", 1)[-1] for w in report.warnings if w.rule == "fixed-din"] == ["resumed.learning_rate"]


@pytest.mark.parametrize("resumed", ["lr_decay_factor", [1], [{"changed": [KEY]}]])
def test_rule_check_flags_an_unreadable_resume_record(run1, data, clean_code, resumed):
    edit(L.TrackDir.of(run1).task2_manifest, lambda d: d.update(resumed=resumed))
    assert any(v.where.endswith("resumed") for v in _fixed_din_violations(run1, data, clean_code))


# ------------------------------------------------------------------ what ran: one checkpoint, this prediction

def test_two_checkpoints_loaded_is_an_ensemble(run12, data, clean_code):
    lay = L.TrackDir.of(run12)
    extra = lay.task2_manifest.parent / "last.pt"
    shutil.copy(lay.task2_manifest.parent / "best.pt", extra)
    edit(lay.task2_manifest, lambda d: d["prediction"]["checkpoints_loaded"].append(
        {"path": "last.pt", "sha256": file_sha256(extra)}))
    assert "no-ensemble" in run_check(run12, data, "task1_2", clean_code).broken


def test_checkpoints_loaded_missing_is_refused(run12, data, clean_code):
    edit(L.TrackDir.of(run12).task2_manifest, lambda d: d["prediction"].pop("checkpoints_loaded"))
    assert "no-ensemble" in run_check(run12, data, "task1_2", clean_code).broken


def test_loaded_checkpoint_other_than_the_trained_one(run12, data, clean_code):
    edit(L.TrackDir.of(run12).task2_manifest,
         lambda d: d["prediction"]["checkpoints_loaded"][0].update(sha256="0" * 64))
    assert "no-ensemble" in run_check(run12, data, "task1_2", clean_code).broken


def test_prediction_edited_and_restamped_is_caught_by_rescoring(run12, data, clean_code):
    lay = L.TrackDir.of(run12)
    lines = lay.prediction.read_text().split("\n")
    for i in range(1, len(lines) - 1):
        idx, p = lines[i].split(",")
        lines[i] = f"{idx},{(float(p) + 0.5) / 2:.8f}"  # averaged with a constant: ranking kept
    lay.prediction.write_text("\n".join(lines))
    restamp_prediction(run12)
    report = run_check(run12, data, "task1_2", clean_code)
    assert "provenance" in report.broken, report.lines()
    assert any("re-scored" in v.reason for v in report.violations)


def test_untracked_file_beside_tracked_code_is_scanned(run12, data, clean_code, tmp_path, monkeypatch):
    import submission.rules as rules_mod

    repo = _tracked_repo(tmp_path)
    (repo / "helper_untracked.py").write_text("import xgboost\n")  # not added: imported by tracked code
    monkeypatch.setattr(rules_mod, "REPO_ROOT", repo)
    report = check("task1_2", run12, data)
    assert any(v.where.startswith("helper_untracked.py") for v in report.violations), report.lines()


def test_tokenizer_code_is_packed_but_token_files_are_not(tmp_path):
    from submission.pack import code_files

    repo = tmp_path / "r"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "tokenizer.py").write_text("x = 1\n")
    (repo / "token.txt").write_text("t")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    kept, left_out = code_files(repo)
    assert kept == ["tokenizer.py"] and list(left_out) == ["token.txt"]


# ------------------------------------------------------------------ track -> configs, declared in Python

def test_track_configs_do_not_depend_on_the_makefile(tmp_path, monkeypatch):
    """pipeline used to parse the Makefile, falling back to a config that does not exist."""
    from submission import pipeline as P

    monkeypatch.setattr(P, "REPO_ROOT", tmp_path)  # no Makefile here
    for name, t in TRACKS.items():
        cfg = P.config_vars(name)
        assert (REPO / cfg["T2_CONFIG"]).is_file() and (REPO / cfg["T1_CONFIG"]).is_file(), cfg
        assert P.make_target(t) == t.make_target
    assert P.config_vars("task1")["T2_CONFIG"] == "task2/configs/din_baseline.yaml"


def test_notebook_refuses_an_output_inside_the_data_dir(data, monkeypatch, capsys):
    out = DataPaths.resolve(data).ctr_dir / "track.ipynb"
    code, _, err = cli(monkeypatch, capsys, "notebook", "--track", "task1", "--out", out, "--data", data)
    assert code == 2 and "inside the data directory" in err and not out.exists()


def test_reproduce_md_names_the_image_variant(monkeypatch):
    from submission import pack as packmod

    monkeypatch.setenv("MMCTR_IMAGE_VARIANT", "cu12")
    monkeypatch.setenv("MMCTR_TORCH", "2.4.1")
    monkeypatch.setenv("MMCTR_TORCH_CUDA", "12.1")
    monkeypatch.setenv("MMCTR_MIN_DRIVER", "530.30.02")
    monkeypatch.setenv("MMCTR_LOCK", "requirements-cu12.lock")
    line = packmod._environment_line()
    assert "`cu12`" in line and "530.30.02" in line and "VARIANT=cu12" in line
    monkeypatch.delenv("MMCTR_IMAGE_VARIANT")
    import torch

    assert torch.__version__ in packmod._environment_line()


def test_frozen_fixed_din_fingerprints_match_the_current_code():
    """The frozen architecture hash and logits are the current din.py's (update them in
    mmctr/tracks.py only after a deliberate change of the baseline: `python -m submission.fingerprint`)."""
    import torch

    from mmctr.tracks import FIXED_DIN_ARCH_SHA256, FIXED_DIN_LOGITS, FIXED_DIN_LOGITS_TOL
    from submission.fingerprint import build_fixed_din, fingerprint, forward_fingerprint

    tags = torch.zeros(31, 5, dtype=torch.long)
    tags[1, 0] = 6
    items = type("Items", (), {"n_items": 30, "n_tags": 7, "tags": tags, "emb": torch.zeros(31, 128)})
    assert fingerprint(build_fixed_din(items), 30, 7)["sha256"] == FIXED_DIN_ARCH_SHA256
    got = forward_fingerprint()
    assert max(abs(a - b) for a, b in zip(got, FIXED_DIN_LOGITS)) <= FIXED_DIN_LOGITS_TOL
    assert forward_fingerprint() == got  # deterministic


# ------------------------------------------------------------------ start-up hooks: warned, not vouched for

def _record_hash(path: Path) -> str:
    import base64
    import hashlib

    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()


def _dist(site: Path, name: str, files: dict) -> None:
    """A distribution installed in `site`: METADATA + RECORD listing `files` (name -> hash or None)."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    rows = [f"{f},{h if h is not None else _record_hash(site / f)},1" for f, h in files.items()]
    (info / "RECORD").write_text("\n".join(rows + [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]) + "\n")


@pytest.fixture()
def hooked_site(tmp_path) -> tuple[Path, dict]:
    """A site dir with every kind of start-up hook; which ones check must name, and why."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import builtins\nbuiltins.len = len\n")
    (site / "usercustomize").mkdir()
    (site / "usercustomize" / "__init__.py").write_text("")
    (site / "patch.pth").write_text("# a comment\n/some/dir\nimport os; os.environ.setdefault('X', '1')\n")
    (site / "tabbed.pth").write_text("import\tos\n")
    (site / "bom.pth").write_bytes(b"\xef\xbb\xbfimport os\n")  # Python 3.13's site.py reads utf-8-sig
    (site / "paths_only.pth").write_text("/some/dir\n# import os\n imports.py\n")  # runs nothing
    (site / "setuptools_like.pth").write_text("import os\n")
    _dist(site, "setuptools", {"setuptools_like.pth": None})  # a locked dist, hash matches: vouched for
    (site / "tampered.pth").write_text("import os; os.system('true')\n")
    _dist(site, "numpy", {"tampered.pth": "sha256=" + "A" * 43})  # a locked dist, another hash
    (site / "own_wheel.pth").write_text("import os\n")
    _dist(site, "my-private-helpers", {"own_wheel.pth": None})  # RECORD matches, not a kit dependency
    expected = {"sitecustomize.py": "in no installed distribution's RECORD",
                "usercustomize/__init__.py": "in no installed distribution's RECORD",
                "patch.pth": "in no installed distribution's RECORD",
                "tabbed.pth": "in no installed distribution's RECORD",
                "bom.pth": "in no installed distribution's RECORD",
                "tampered.pth": "RECORD of numpy lists it with another sha256",
                "own_wheel.pth": "of distribution my-private-helpers, which the kit's lock files do not pin"}
    return site, {str((site / k).resolve()): v for k, v in expected.items()}


def test_startup_hooks_not_vouched_for_are_listed(hooked_site):
    from submission.startup import unvouched

    site, expected = hooked_site
    assert dict(unvouched([site])) == expected
    assert unvouched([site / "nowhere", site / "sitecustomize.py"]) == []  # not folders: nothing there


def test_sitecustomize_in_a_zip_on_sys_path_is_listed(tmp_path):
    from submission.startup import unvouched

    archive = tmp_path / "hooks.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("sitecustomize.py", "import os\n")
        z.writestr("usercustomize/__init__.py", "")
        z.writestr("other.py", "")
    assert unvouched([archive]) == [(str(archive / "sitecustomize.py"), "in no installed distribution's RECORD"),
                                    (str(archive / "usercustomize/__init__.py"),
                                     "in no installed distribution's RECORD")]


def test_check_warns_about_startup_hooks_and_still_passes(run12, data, clean_code, hooked_site, monkeypatch):
    site, expected = hooked_site
    monkeypatch.syspath_prepend(str(site))
    report = run_check(run12, data, "task1_2", clean_code)
    assert report.ok, report.lines()
    warned = [w for w in report.warnings if w.rule == "startup"]
    assert len(warned) == 1 and "startup" not in report.checked
    for path, why in expected.items():
        assert f"{path} ({why})" in warned[0].reason
    assert "check cannot vouch for code run at interpreter start-up; the organisers' `submission " \
           "reproduce` in a clean image does" in warned[0].reason
    assert str(site / "paths_only.pth") not in warned[0].reason
    assert str(site / "setuptools_like.pth") not in warned[0].reason
    assert any(line.startswith("warn [startup]") for line in report.lines())


def test_check_cli_names_a_sitecustomize_that_ran(run12, data, clean_code, tmp_path):
    site = tmp_path / "pp"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['MMCTR_HOOKED'] = '1'\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(site)]))
    r = subprocess.run([sys.executable, "-m", "submission", "check", "--track", "task1_2", "--runs", str(run12),
                        "--data-dir", str(data), "--code", str(clean_code), "--json"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warned = [w for w in json.loads(r.stdout)["warnings"] if w["rule"] == "startup"]
    assert len(warned) == 1 and str((site / "sitecustomize.py").resolve()) in warned[0]["reason"]


# ------------------------------------------------------------ check: an unverifiable run is not ok

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

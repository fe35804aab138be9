"""Red-team regressions: attacks on the merged kit that went through, each pinned by a test."""
from __future__ import annotations

import zipfile

import pytest

from mmctr.errors import KitError
from submission import reproduce as R


def _bundle(path, method=zipfile.ZIP_DEFLATED, **entries):
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name.replace("__", "/"), data)
    return path


def test_reproduce_refuses_a_zip_bomb_before_unpacking(tmp_path, monkeypatch):
    """A hostile bundle: a few KB that unpack to far more than any bundle holds (was read whole into
    memory: 300 MB of zeros took 690 MB RSS)."""
    bundle = _bundle(tmp_path / "bomb.zip", run__sh="echo\n", big=b"\0" * (4 << 20))
    monkeypatch.setattr(R, "MAX_BUNDLE_BYTES", 1 << 20)
    with pytest.raises(KitError, match="more than a bundle holds"):
        R.safe_extract(bundle, tmp_path / "out")
    assert not (tmp_path / "out" / "big").exists()


def test_reproduce_damaged_entry_is_one_error_line(tmp_path):
    """A bundle with a bad CRC was an `unexpected BadZipFile` with a traceback log."""
    bundle = _bundle(tmp_path / "crc.zip", zipfile.ZIP_STORED, run__sh="echo hello world hello\n")
    raw = bytearray(bundle.read_bytes())
    raw[raw.find(b"hello world")] = ord("j")
    bundle.write_bytes(bytes(raw))
    with pytest.raises(KitError, match="'run.sh' is damaged"):
        R.safe_extract(bundle, tmp_path / "out")


def test_atomic_write_through_link_dotdot_lands_where_the_kernel_puts_it(tmp_path):
    """`--out a/link/../f`: mkstemp collapsed `link/..` lexically, so the temp file went to another
    folder (or failed: `mmctr sample --out link/..` half-rewrote a sample, then died)."""
    from mmctr.io import write_json

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "ctr").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "link").symlink_to(tmp_path / "real" / "sub")
    write_json(tmp_path / "a" / "link" / ".." / "ctr" / "f.json", {"x": 1})
    assert (tmp_path / "real" / "ctr" / "f.json").is_file()
    assert not (tmp_path / "a" / "ctr").exists()


@pytest.mark.parametrize("argv", [
    ["submission", "notebook", "--track", "task2", "--out", "{link}/nb.ipynb"],
    ["mmctr", "report", "--runs-root", "{runs}", "--out", "{link}/r.png"],
])
def test_commands_without_data_dir_do_not_write_into_a_data_set(argv, tiny_data, tmp_path, monkeypatch,
                                                                  capsys):
    """`submission notebook` and `mmctr report` take no --data-dir: an --out through a link into
    MicroLens_1M_x1/ was written there."""
    import sys

    from mmctr.cli import entry as mmctr_entry
    from submission.cli import entry as submission_entry

    from mmctr import contract as C

    (tmp_path / "runs").mkdir()
    (tmp_path / "link").symlink_to(tiny_data / C.CTR_DIR)
    before = sorted(p.name for p in (tiny_data / C.CTR_DIR).iterdir())
    args = [a.format(link=tmp_path / "link", runs=tmp_path / "runs") for a in argv]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exc:
        (submission_entry if args[0] == "submission" else mmctr_entry)()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and "inside the data directory" in err, err
    assert sorted(p.name for p in (tiny_data / C.CTR_DIR).iterdir()) == before


def test_outputs_beside_a_data_set_stay_allowed(tmp_path):
    from mmctr import contract as C
    from mmctr.paths import refuse_data_like

    (tmp_path / C.CTR_DIR).mkdir()
    refuse_data_like(tmp_path / "runs" / "report.png")  # ~/mm/runs next to ~/mm/MicroLens_1M_x1
    with pytest.raises(KitError):
        refuse_data_like(tmp_path / "report.png")


# ------------------------------------------------------------ check: an unverifiable run is not ok

from test_submission_integrity import (  # noqa: E402,F401  (fixtures and run builders)
    clean_code, data, edit, make_run, restamp_prediction, run_check)


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


def test_runs_on_a_non_utf8_results_csv_is_one_error_line(tmp_path):
    """`mmctr runs` over a damaged results.csv was an `unexpected UnicodeDecodeError` + traceback log."""
    from mmctr.runs import read_results

    (tmp_path / "results.csv").write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(KitError, match="not a results table the kit can read"):
        read_results(tmp_path)


def test_summary_over_a_hand_edited_manifest_is_one_error_line(tmp_path, tiny_data):
    """`mmctr summary` with best_valid_auc "nan" (a string) in the task2 manifest was an
    `unexpected ValueError` with a traceback log."""
    import json

    from mmctr.runs import summary_block

    (tmp_path / "task2").mkdir()
    (tmp_path / "task2" / "manifest.json").write_text(json.dumps({"kind": "task2", "best_valid_auc": "nan"}))
    with pytest.raises(KitError, match="wrong type"):
        summary_block(tmp_path, tiny_data, track="task2")


def test_resume_refuses_a_damaged_history_before_training(tmp_path, tiny_data, monkeypatch, capsys):
    """`task2 train --resume` over a damaged history.jsonl trained a whole epoch, printed its
    result, then died on the history when drawing: the check now comes before any work."""
    import sys

    from task2 import train as train_mod
    from task2.cli import entry

    out = tmp_path / "runs" / "task2"
    out.mkdir(parents=True)
    (out / "history.jsonl").write_text('{"epoch": 1}\n{bad\n')
    monkeypatch.setattr(train_mod, "train_model", lambda *a, **k: pytest.fail("trained before the check"))
    monkeypatch.setattr(sys, "argv", ["task2", "train", "--data-dir", str(tiny_data), "--config", "din_baseline",
                                      "--out", str(out), "--resume"])
    with pytest.raises(SystemExit) as exc:
        entry()
    assert exc.value.code == 2 and "history.jsonl line 2 is not JSON" in capsys.readouterr().err


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

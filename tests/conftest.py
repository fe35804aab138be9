import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mmctr.sample import SampleConfig, generate  # noqa: E402

@pytest.fixture(autouse=True, scope="module")
def _fresh_ledger_per_module():
    _restart_ledger()


@pytest.fixture(autouse=True)
def _fresh_ledger():
    """A kit command is one process with its own ledger; in this one process the tests share,
    each test (and module) starts a fresh record, so one test's spawned `python -c "import
    lightgbm"` is not in the ledger of another test's in-process training."""
    _restart_ledger()


def _restart_ledger() -> None:
    from mmctr import ledger

    ledger._state = None
    ledger.install()


def load_script(path: Path):
    """A script that is not a package module (docker/*.py, bench/*.py), imported from its path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TINY = SampleConfig(n_items=300, n_users=500, n_train=4000, n_valid=800, n_test=900, image_size=32, workers=1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small generated sample (read-only for tests: copy it before corrupting)."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    generate(root, TINY)
    return root


@pytest.fixture()
def data_copy(tiny_data, tmp_path) -> Path:
    """A private copy of the tiny sample, for tests that corrupt or write beside it."""
    dst = tmp_path / "data"
    shutil.copytree(tiny_data, dst)
    return dst

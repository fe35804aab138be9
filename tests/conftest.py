import os
import shutil
import struct
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# one torch / OpenMP thread, here and in every command a test starts: the tests check behaviour,
# and on a small or shared machine a second spinning thread per process only costs time
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

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


def kit_cli(capsys, group, *args) -> tuple[int, str, str]:
    """A kit command's click group run in this process the way `python -m PKG` runs it (mmctr.cli.run:
    one `error:` line, exit 2): (exit status, stdout, stderr). For error paths that fail before any
    work; each command keeps a test that starts it in its own process."""
    from mmctr.cli import run

    capsys.readouterr()
    try:
        run(group, [str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


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


# ---------- the rule check's runs: a sample, declared encoder weights, clean training code ----------

@pytest.fixture(scope="session")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    generate(root, SampleConfig(n_items=300, n_users=500, n_train=3000, n_valid=500, n_test=800, workers=1))
    return root


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    """Pretrained encoder weights living outside the data and runs dirs (declared by task1)."""
    p = tmp_path_factory.mktemp("hf_cache") / "encoder.safetensors"
    p.write_bytes(b"fake weights")
    return p


@pytest.fixture()
def clean_code(tmp_path) -> Path:
    """A training-code dir with nothing banned (mentions in strings/comments are not imports)."""
    d = tmp_path / "code"
    d.mkdir()
    (d / "train.py").write_text(
        "import numpy as np\nimport torch\n# we do not use xgboost or transformers here\n"
        "BANNED = ('xgboost', 'sklearn.ensemble', 'transformers')\n"
        "from sklearn.metrics import roc_auc_score\n"
        "def f(x):\n    return np.mean(x)\n")
    return d


# ---------- editing a sample copy: covers, parquet columns, snapshots ----------

def make_jpeg(path, w, h, color=(200, 30, 90)):
    Image.new("RGB", (w, h), color).save(path, format="JPEG", quality=80)
    return path


def patch_jpeg_size(path, w, h):
    """Rewrite the SOF0 header so the file claims w x h pixels (the scan data stays small)."""
    b = bytearray(path.read_bytes())
    i = b.index(b"\xff\xc0")
    b[i + 5:i + 9] = struct.pack(">HH", h, w)
    path.write_bytes(bytes(b))
    return path


def set_column(t, name, values):
    return t.set_column(t.column_names.index(name), name,
                        values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values))


def with_list_value(t, name, row, pos, value, value_type):
    rows = t.column(name).to_pylist()
    rows[row][pos] = value
    return set_column(t, name, pa.array(rows, type=pa.list_(value_type)))


def snapshot(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns, p.stat().st_size)
                  for p in root.rglob("*"))

"""`submission notebook`: a self-contained notebook (nbformat v4) that runs a track end to end.

The kit's code travels inside the notebook as a base64 tar.gz (the same files as the repro
bundle's code/), so organisers and Kaggle users need only the notebook and the data. The
pipeline cells are rendered from pipeline.steps(), the same steps as the Makefile and run.sh.
"""
from __future__ import annotations

import base64
import io
import os
import tarfile
from pathlib import Path

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.io import atomic_path
from mmctr.paths import refuse_data_write
from mmctr.sample import TRUTH_DIR
from mmctr.tracks import get_track

from mmctr import rundir as L
from . import pipeline as P
from .pack import REPO_ROOT, code_files

TAR_TIME = 315532800  # 1980-01-01: the same code gives the same notebook


def kit_archive() -> str:
    """base64 of a tar.gz of the kit's code (the repro bundle's selection: git-tracked files, no
    symlinks, no secret-like names, nothing over MAX_CODE_FILE; notebooks left out)."""
    buf = io.BytesIO()
    kept, _ = code_files()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tar:
        for n in kept:
            p = REPO_ROOT / n
            if p.suffix == ".ipynb":
                continue
            data = p.read_bytes()
            info = tarfile.TarInfo(n)
            info.size, info.mtime = len(data), TAR_TIME
            info.mode = 0o755 if p.stat().st_mode & 0o111 else 0o644
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode("ascii")


def build(track: str, data: str = "data/sample", embed: bool = True):
    """Return the notebook (nbformat NotebookNode) for `track`."""
    import nbformat
    from nbformat import v4

    t = get_track(track)
    cfg = P.config_vars(t.name)
    md, code = v4.new_markdown_cell, v4.new_code_cell
    what = {"task1": "new 128-D item embeddings (Task 1) with the fixed baseline DIN",
            "task2": "the provided embeddings with our own CTR model (Task 2)",
            "task1_2": "new 128-D item embeddings (Task 1) and our own CTR model (Task 2)"}[t.name]
    cells = [md(
        f"# mmctr-kit: WWW 2025 MM-CTR challenge, track `{t.name}` (score column `{t.column}`)\n\n"
        f"This notebook runs the track end to end: {what}. It sets up the pinned environment, "
        f"checks the data against the contract, runs the kit's CLIs exactly as `make "
        f"{P.make_target(t.name)}` does, checks the challenge rules and packs `submission.zip` "
        f"(`{C.SUBMISSION_FILE}` at its root) plus the reproducibility bundle for the final round.\n\n"
        f"Set `DATA` to the folder holding `{C.CTR_DIR}/` (on Kaggle: the attached dataset under "
        "`/kaggle/input/...`). With `MAKE_SAMPLE = True` and no data there, a small MicroLens-shaped "
        "sample is generated so the notebook runs anywhere on CPU in minutes.\n\n"
        "Rules the check enforces: one neural CTR model (no ensembles, no averaged predictions, no "
        "tree/boosting libraries), no pretrained model in the CTR model, inputs only from the data "
        "set (plus declared pretrained weights in Task 1), no test rows or labels in training"
        + (", the fixed DIN with only its five tunable hyperparameters" if not t.custom_model else "")
        + (", the provided embeddings unchanged" if not t.new_embeddings else "") + "."),
        code(
            "import os, sys\n\n"
            f"TRACK = {t.name!r}\n"
            f"DATA = os.path.abspath(os.environ.get('MMCTR_DATA', {data!r}))  # folder holding {C.CTR_DIR}/\n"
            "MAKE_SAMPLE = True   # generate the sample data if DATA holds none\n"
            "INSTALL = True       # pip install requirements.lock and the kit (off if already installed)\n"
            + ("WORK = os.path.abspath(os.environ.get('MMCTR_WORK', 'mmctr-kit'))  # where the kit is unpacked\n"
               if embed else
               f"WORK = os.path.abspath(os.environ.get('MMCTR_WORK', {str(REPO_ROOT)!r}))  # the kit's checkout\n")
            + "RUNS = os.path.join(WORK, 'runs', TRACK)\n"
            f"T1_CONFIG = {cfg['T1_CONFIG']!r}  # Task-1 config (relative to WORK)\n"
            f"T2_CONFIG = {cfg['T2_CONFIG']!r}  # CTR model config"
            + (" (the fixed baseline DIN: change only its five tunable keys)" if not t.custom_model else "")
            + "\nPY = sys.executable"),
    ]
    if embed:
        cells += [md("## The kit's code\nUnpacked from this notebook into `WORK` (skipped when it is "
                     "already there)."),
                  code("import base64, io, tarfile\n"
                       f"KIT = {kit_archive()!r}\n"
                       "if not os.path.isfile(os.path.join(WORK, 'pyproject.toml')):\n"
                       "    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(KIT)), mode='r:gz') as tar:\n"
                       "        try:\n"
                       "            tar.extractall(WORK, filter='data')\n"
                       "        except TypeError:  # Python without extraction filters\n"
                       "            tar.extractall(WORK)\n"
                       "print('kit in', WORK)")]
    cells += [
        code("import shlex, subprocess\n\n"
             "os.chdir(WORK)\n"
             "sys.path.insert(0, WORK)\n\n\n"
             "def sh(*args):\n"
             "    \"\"\"Run a command, stream its output into the notebook, stop on failure.\"\"\"\n"
             "    args = [str(a) for a in args]\n"
             "    print('$', ' '.join(shlex.quote(a) for a in args), flush=True)\n"
             "    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)\n"
             "    for line in proc.stdout:\n"
             "        print(line, end='')\n"
             "    if proc.wait():\n"
             "        raise RuntimeError(f'command failed with exit status {proc.returncode}')"),
        md("## Set up\nThe pinned environment (`requirements.lock`) and the kit itself."),
        code("if INSTALL:\n"
             "    sh(PY, '-m', 'pip', 'install', '-q', '-r', 'requirements.lock')\n"
             "    sh(PY, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation', '-e', '.')"),
        md("## Data\nGenerate the sample if asked and needed, then validate `DATA` against the data contract."),
        code(f"if MAKE_SAMPLE and not os.path.isfile(os.path.join(DATA, {C.TRAIN.relpath!r})):\n"
             "    sh(PY, '-m', 'mmctr', 'sample', '--out', DATA)\n"
             "sh(PY, '-m', 'mmctr', 'validate', '--data-dir', DATA)"),
    ]
    for s in P.steps(t.name):
        cells += [md(f"## {s.title}"), code(P.render_python(s))]
    cells += [
        md("## Results\nThe run manifests (validation AUC, timings) and the packed zip. On the sample "
           "data the test labels are known, so the zip is scored as the organisers' scorer would."),
        code("import json, zipfile\n"
             "from submission.prediction import score\n\n"
             f"t2 = json.load(open(os.path.join(RUNS, {L.TASK2_DIR!r}, {L.MANIFEST!r})))\n"
             "print('CTR model:', t2['config'].get('model'), '| best valid AUC:', t2.get('best_valid_auc'),\n"
             "      '| best epoch:', t2.get('best_epoch'))\n"
             "print('timings:', t2.get('timings'))\n"
             f"t1_path = os.path.join(RUNS, {L.TASK1_DIR!r}, {L.TASK1_MANIFEST!r})\n"
             "if os.path.isfile(t1_path):\n"
             "    t1 = json.load(open(t1_path))\n"
             "    print('Task 1 models:', t1.get('models'), '| timings:', t1.get('timings'))\n"
             "zip_path = os.path.join(RUNS, 'submission.zip')\n"
             "print(zip_path, zipfile.ZipFile(zip_path).namelist())\n"
             f"truth = os.path.join(DATA, {TRUTH_DIR!r}, 'test.parquet')\n"
             "if os.path.isfile(truth):\n"
             "    from mmctr.sample import read_truth\n"
             "    p_click, labels = read_truth(DATA, 'test')\n"
             "    from mmctr.metrics import roc_auc\n"
             "    print(f'test AUC {score(zip_path, labels, TRACK):.4f} '\n"
             "          f'(oracle with the true click probabilities: {roc_auc(labels, p_click):.4f})')"),
    ]
    nb = v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "mmctr": {"track": t.name, "column": t.column, "embedded_code": embed}})
    nbformat.validate(nb)
    return nb


def write(track: str, out, data: str = "data/sample", embed: bool = True) -> Path:
    import nbformat

    out = Path(out).expanduser()
    if out.suffix != ".ipynb":
        raise KitError(f"--out must end in .ipynb, got {out}")
    refuse_data_write(out, data if Path(data).expanduser().is_dir() else None, "--out")
    nb = build(track, data=data, embed=embed)
    with atomic_path(out) as tmp:
        nbformat.write(nb, str(tmp))
        os.chmod(tmp, 0o644)
    return out

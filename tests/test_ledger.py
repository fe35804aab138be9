"""mmctr.ledger: what a process loaded and spawned, whatever the source text says; the rules read it.

Each way of loading a tree library that the source scan cannot see (attribute access, pkgutil,
pydoc, pickle, importlib by spec, __import__ from vars(builtins), exec, runpy, a .pyc with no
source, a spawned Python) runs in a fresh interpreter with the ledger installed; the ledger it
writes must make `no-trees` (or `no-pretrained-ctr` for a task2 run) fail. A fake `lightgbm` /
`transformers` package on the path stands in for the real ones (the import event is the same).
"""
from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from mmctr import contract as C
from mmctr import ledger
from submission.ledgers import check_ledgers, sklearn_metrics_closure
from submission.rules import Report, check

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fakes(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fakes")
    for pkg in ("lightgbm", "transformers"):
        (d / pkg).mkdir()
        (d / pkg / "__init__.py").write_text("class Booster:\n    pass\n\nclass AutoModel:\n"
                                             "    @classmethod\n    def from_pretrained(cls, name):\n"
                                             "        return cls()\n")
    (d / "helper.py").write_text("import lightgbm\n")
    (d / "hidden_src.py").write_text("import lightgbm\n")
    py_compile.compile(str(d / "hidden_src.py"), cfile=str(d / "hidden.pyc"))
    (d / "hidden_src.py").unlink()
    (d / "latin.py").write_bytes("# -*- coding: latin-1 -*-\n# caf\xe9\nimport lightgbm\n".encode("latin-1"))
    return d


def ran(code: str, fakes: Path, entry: str = "task2 train") -> dict:
    """The ledger of a fresh interpreter that installs it, then runs `code`."""
    prog = (f"from mmctr import ledger\nledger.install({entry!r})\n{code}\n"
            "import json, sys\nsys.stdout.write('LEDGER' + json.dumps(ledger.snapshot()))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(fakes)])}
    p = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=env, cwd=fakes,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.rsplit("LEDGER", 1)[1])


def verdict(t2_ledger, t1_ledger=None, predict_ledger=None) -> Report:
    """check_ledgers on manifests carrying these ledgers (no run folder needed)."""
    rep = Report("task1_2", "runs", "data")
    ctx = SimpleNamespace(report=rep, rel=str,
                          run=SimpleNamespace(task1_manifest=Path("task1/m.json"), task2_manifest=Path("task2/m.json")))
    t1 = None if t1_ledger is None else {"ledger": t1_ledger}
    t2 = {"ledger": t2_ledger, "prediction": {"ledger": predict_ledger or honest(entry="task2 predict")}}
    check_ledgers(ctx, t1, t2)
    return rep


def honest(**changes) -> dict:
    from runs_factory import honest_ledger

    return honest_ledger(**changes)


TREE_LOADS = {
    "attribute access after import sklearn": "import sklearn\nsklearn.ensemble.GradientBoostingClassifier",
    "pkgutil.resolve_name": "import pkgutil\npkgutil.resolve_name('lightgbm:Booster')",
    "pydoc.locate": "import pydoc\npydoc.locate('lightgbm.Booster')",
    "pickle.loads of a class reference": "import pickle\npickle.loads(b'clightgbm\\nBooster\\n.')",
    "find_spec + exec_module": "import importlib.util as u\ns = u.find_spec('lightgbm')\nm = u.module_from_spec(s)\n"
                               "s.loader.exec_module(m)",
    "import_module under another name": "from importlib import import_module as load\nload('light' + 'gbm')",
    "vars(builtins)['__import__']": "import builtins\nvars(builtins)['__im' + 'port__']('lightgbm')",
    "exec of a string": "exec('import light' + 'gbm')",
    "latin-1 encoded .py": "import latin",
    "deleted from sys.modules after use": "import sys\nimport lightgbm\nimport json\n"
                                          "del sys.modules['lightgbm']",
    ".pyc with no source": "import importlib.machinery as m, importlib.util as u\n"
                           "l = m.SourcelessFileLoader('hidden', 'hidden.pyc')\n"
                           "s = u.spec_from_loader('hidden', l)\nl.exec_module(u.module_from_spec(s))",
    "runpy.run_path of an untracked file": "import runpy\nrunpy.run_path('helper.py')",
    "subprocess.run([sys.executable, -c ...])": "import subprocess, sys\n"
                                                "subprocess.run([sys.executable, '-c', 'import lightgbm'])",
    "os.system of python -c": "import os\nos.system('true python -c \"import lightgbm\"')",
    "a shell script's python -c": "import subprocess\nsubprocess.run(['sh', '-c', 'true import lightgbm'])",
}


@pytest.mark.parametrize("how", list(TREE_LOADS))
def test_a_tree_library_loaded_any_way_breaks_no_trees(fakes, how):
    led = ran(TREE_LOADS[how], fakes)
    rep = verdict(led)
    assert "no-trees" in rep.broken, (how, rep.lines())
    assert any("lightgbm" in v.reason or "sklearn.ensemble" in v.reason for v in rep.violations)


PRETRAINED = {
    "import_module('transformers')": "from importlib import import_module as load\n"
                                     "load('transformers').AutoModel.from_pretrained('x')",
    "getattr(cls, 'from_' + 'pretrained')": "import transformers\n"
                                            "getattr(transformers.AutoModel, 'from_' + 'pretrained')('x')",
    "a fetch through urllib (torch.hub.load's way)": "import urllib.request\ntry:\n"
                                                     "    urllib.request.urlopen("
                                                     "'http://127.0.0.1:9/w.pt', timeout=1)\n"
                                                     "except OSError:\n    pass",
    "weights from a file not the run's": "open('encoder.safetensors', 'wb').close()\n"
                                         "open('encoder.safetensors', 'rb').close()",
}


@pytest.mark.parametrize("how", list(PRETRAINED))
def test_a_pretrained_model_in_the_ctr_run_breaks_no_pretrained_ctr(fakes, how):
    rep = verdict(ran(PRETRAINED[how], fakes))
    assert "no-pretrained-ctr" in rep.broken, (how, rep.lines())


def test_pretrained_hubs_are_allowed_in_task1(fakes):
    led = ran("import transformers", fakes, entry="task1 build")
    assert "transformers" in led["modules"]
    assert verdict(honest(), t1_ledger=led).ok


def test_predict_opening_two_checkpoints_breaks_no_ensemble(tmp_path):
    rep = verdict(honest(), predict_ledger=honest(entry="task2 predict",
                                                  weights_opened=["/r/best.pt", "/r/other/best.pt"]))
    assert rep.broken == ["no-ensemble"], rep.lines()


@pytest.mark.parametrize("ledger_value, why", [
    (None, "records no ledger"), ("x", "records no ledger"),
    ({"modules": []}, "lacks one of"), ("edited", "edited after the run")])
def test_a_manifest_without_a_sound_ledger_breaks_manifest(ledger_value, why):
    if ledger_value == "edited":
        ledger_value = {**honest(), "modules": ["numpy"]}  # sklearn.ensemble removed by hand, say
    rep = verdict(ledger_value)
    assert rep.broken == ["manifest"] and why in rep.violations[0].reason, rep.lines()


def test_the_ledger_records_modules_processes_and_dynamic_code(fakes):
    led = ran("import subprocess\nsubprocess.run(['true'])\nexec(compile('x = 1', '<mine>', 'exec'))\n"
              "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
              "except OSError:\n    pass\n"
              "try:\n    import no_such_module_at_all\nexcept ImportError:\n    pass", fakes)
    assert led["entry"] == "task2 train" and "subprocess" in led["modules"]
    assert {"event": "subprocess.Popen", "argv": ["true"]} in led["processes"]
    assert led["dynamic_code"]["compile"] >= 1 and any("<mine>" in s for s in led["dynamic_code"]["samples"])
    assert "no_such_module_at_all" in led["attempted"] and "no_such_module_at_all" not in led["modules"]
    assert led["network"] == []  # this machine (torch.distributed's rendezvous) is not the network
    assert led["sha256"] == ledger.digest(led)


@pytest.fixture()
def closure_cache(tmp_path, monkeypatch):
    """An empty user cache folder and no closure remembered by this process (before and after)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sklearn_metrics_closure.cache_clear()
    yield tmp_path / "cache" / "mmctr"
    sklearn_metrics_closure.cache_clear()


def test_sklearn_metrics_is_no_false_alarm(closure_cache):
    """The kit imports sklearn.metrics: everything that pulls in is allowed, by exact name."""
    closure = sklearn_metrics_closure()
    [cached] = closure_cache.glob("sklearn_metrics_*.json")  # computed in a fresh interpreter, then kept
    assert json.loads(cached.read_text()) == sorted(closure)
    assert "sklearn.metrics" in closure and not any(m.startswith(("sklearn.ensemble", "sklearn.tree"))
                                                    for m in closure)
    rep = verdict(honest(watched=sorted(closure)))
    assert rep.ok and not rep.warnings, rep.lines()
    rep = verdict(honest(watched=sorted(closure | {"sklearn.linear_model"})))
    assert rep.ok and [w.rule for w in rep.warnings] == ["single-model"]


def test_the_sklearn_metrics_closure_is_read_from_the_cache_and_a_bad_one_recomputed(closure_cache, monkeypatch):
    import submission.ledgers as LS

    calls = []

    def fake_run(argv, **kw):
        calls.append(argv)
        return SimpleNamespace(stdout=json.dumps(["sklearn", "sklearn.metrics", "sklearn.utils"]))

    monkeypatch.setattr(LS.subprocess, "run", fake_run)
    path = LS._closure_cache()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(["sklearn", "sklearn.metrics"]))
    assert sklearn_metrics_closure() == {"sklearn", "sklearn.metrics"} and calls == []
    for bad in ("{not json", json.dumps(["sklearn.metrics", "lightgbm"]), json.dumps({"sklearn.metrics": 1})):
        path.write_text(bad)
        sklearn_metrics_closure.cache_clear()
        assert sklearn_metrics_closure() == {"sklearn", "sklearn.metrics", "sklearn.utils"}, bad
        assert json.loads(path.read_text()) == ["sklearn", "sklearn.metrics", "sklearn.utils"]
    assert len(calls) == 3 and calls[0][1:3] == ["-I", "-c"]


@pytest.mark.slow
def test_a_real_task2_run_records_an_honest_ledger(tiny_data, tmp_path):
    """train + predict through the CLI: both ledgers are written and check passes on them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"
    out = runs / "task2"
    for args in (["train", "--data-dir", tiny_data, "--config", "din_baseline", "--out", out, "--max-epochs", "1",
                  "--set", "num_threads=1", "--set", "batch_size=1024"],
                 ["predict", "--run", out, "--data-dir", tiny_data, "--track", "task2"]):
        p = subprocess.run([sys.executable, "-m", "task2", *map(str, args)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    train, pred = m["ledger"], m["prediction"]["ledger"]
    assert train["entry"] == "task2 train" and pred["entry"] == "task2 predict"
    assert "torch" in train["modules"] and not [n for n in train["watched"] if "ensemble" in n]
    assert [Path(p).name for p in pred["weights_opened"]] == ["best.pt"]
    rep = check("task2", runs, tiny_data)
    assert "manifest" not in rep.broken and "no-trees" not in rep.broken, rep.lines()
    assert not [w for w in rep.warnings if w.rule in ("no-trees", "single-model")], rep.lines()
    assert (runs / "task2" / C.SUBMISSION_FILE).is_file()

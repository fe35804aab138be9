"""Task-1 track: the fixed DIN's whole training path is frozen by sha256 (mmctr.tracks).

The eval-mode fingerprint cannot see an optimizer swap in train.py or a change that runs only
under `self.training`; the frozen source hashes, in this checkout and in the run's ledger, can.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmctr import ledger
from mmctr.tracks import FIXED_DIN_SOURCES, REFREEZE, training_path_changes
from mmctr import rundir as L

from runs_factory import edit, run_check
from runs_factory import make_run_with_weights as make_run

ROOT = Path(__file__).resolve().parents[1]
ADAMW = ("torch.optim.Adam(", "torch.optim.AdamW(")
TRAINING_ONLY = ("        return self.dnn(x).squeeze(-1)",  # label-smoothing-like noise, training only
                 "        if self.training:\n            x = x + 0.01 * torch.randn_like(x)\n"
                 "        return self.dnn(x).squeeze(-1)")


def test_the_training_path_matches_its_freeze():
    changed = training_path_changes()
    assert not changed, (f"the fixed DIN's training code changed: {changed}. If intended, run `{REFREEZE}` "
                         "and commit mmctr/tracks.py")


def test_every_training_path_file_is_frozen_and_loaded_by_training():
    """The freeze names the files the trainer really imports (the ledger of an import of it)."""
    prog = ("from mmctr import ledger; ledger.install(); import task2.train, task2.predict; "
            "import json; print(json.dumps(ledger.snapshot()['sources']))")
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-1000:]
    import json

    loaded = json.loads(out.stdout)
    assert set(FIXED_DIN_SOURCES) <= set(loaded)
    assert {p for p in loaded if p.startswith("task2/models/")} == \
        {p for p in FIXED_DIN_SOURCES if p.startswith("task2/models/")} | {"task2/models/transformer_dcn.py"}


def _edited_copy(tmp_path: Path, rel: str, change) -> Path:
    root = tmp_path / "kit"
    for f in FIXED_DIN_SOURCES:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f, root / f)
    text = (root / rel).read_text()
    assert change[0] in text, f"{rel} no longer holds {change[0]!r}: update this test"
    (root / rel).write_text(text.replace(change[0], change[1], 1))
    return root


@pytest.mark.parametrize("rel, change", [("task2/train.py", ADAMW), ("task2/models/din.py", TRAINING_ONLY)])
def test_an_edited_checkout_is_caught(tmp_path, rel, change):
    root = _edited_copy(tmp_path, rel, change)
    assert [p for p, _ in training_path_changes(root)] == [rel]


@pytest.mark.parametrize("rel, change", [("task2/train.py", ADAMW), ("task2/models/din.py", TRAINING_ONLY)])
def test_check_task1_fails_a_run_trained_with_edited_code(tmp_path, data, weights, clean_code, rel, change):
    """A run whose ledger says it loaded an edited train.py (AdamW) or din.py (a change under
    self.training, invisible to the eval-mode fingerprint): `check --track task1` fails fixed-din."""
    root = _edited_copy(tmp_path, rel, change)
    runs = make_run(tmp_path, data, "task1", weights)

    def trained_with_edit(d):
        d["ledger"]["sources"][rel] = ledger.source_sha256(root / rel)
        d["ledger"] = ledger.seal(d["ledger"])
    edit(L.TrackDir.of(runs).task2_manifest, trained_with_edit)
    rep = run_check(runs, data, "task1", clean_code)
    assert rep.broken == ["fixed-din"], rep.lines()
    assert any(rel in v.where and REFREEZE in v.reason for v in rep.violations), rep.lines()


def test_refreeze_rewrites_the_hashes(tmp_path, monkeypatch):
    """`python -m mmctr.tracks --refreeze` on a copy of tracks.py writes the checkout's hashes."""
    import mmctr.tracks as T

    copy = tmp_path / "tracks.py"
    text = Path(T.__file__).read_text()
    stale = text.replace(FIXED_DIN_SOURCES["task2/train.py"], "0" * 64)
    copy.write_text(stale)
    monkeypatch.setattr(T, "__file__", str(copy))
    hashes = T.refreeze()
    assert copy.read_text() == text and hashes == FIXED_DIN_SOURCES

"""The rule check of the fixed DIN reads the manifest's `resumed` record: a frozen key changed on
--resume is a violation, one of the five tunable keys a warning."""
from __future__ import annotations

import json

import pytest

from submission import layout as L
from task2.config import load_config
from task2.train import train_model
from test_submission_integrity import clean_code, data, edit, make_run, run1, run_check  # noqa: F401 - fixtures

KEY = "lr_decay_factor"  # frozen at 0.1 for the fixed DIN, may change on --resume


def _fixed_din_violations(runs, data, clean_code) -> list:
    report = run_check(runs, data, "task1", clean_code)
    return [v for v in report.violations if v.rule == "fixed-din"]


@pytest.fixture(scope="module")
def din_bent_then_resumed(data, tmp_path_factory):
    """The fixed DIN trained with another lr_decay_factor, then `--resume`d with the frozen value and
    no epoch left to train: the kit's own manifest of a run that bent the rule."""
    out = tmp_path_factory.mktemp("din") / "task2"
    over = {"batch_size": 256, "num_threads": 1, "max_epochs": 1}
    train_model(load_config("din_baseline", {**over, KEY: 0.5}), data, None, out, quiet=True)
    train_model(load_config("din_baseline", over), data, None, out, quiet=True, resume=True)
    return json.loads((out / "manifest.json").read_text())


def test_resume_to_the_frozen_values_does_not_hide_a_bent_rule(din_bent_then_resumed, data, tmp_path,
                                                               clean_code):
    """The final config reads the frozen values; `resumed` records that the DIN trained with
    another one. The rule check must read that record."""
    m = din_bent_then_resumed
    assert m["config"][KEY] == 0.1
    assert m["resumed"][-1]["changed"] == {KEY: [0.5, 0.1]}
    runs = make_run(tmp_path, data, "task1", config=m["config"])
    assert run_check(runs, data, "task1", clean_code).ok  # the same config without the record passes
    edit(L.RunLayout.of(runs).task2_manifest, lambda d: d.update(resumed=m["resumed"]))
    assert any(v.where.endswith(f"resumed.{KEY}") for v in _fixed_din_violations(runs, data, clean_code))


@pytest.mark.parametrize("key, old, new", [("lr_decay_factor", 0.5, 0.1),
                                           ("early_stop_patience", 10, 3),
                                           ("grad_clip_norm", 0.0, 10.0)])
def test_rule_check_flags_a_frozen_key_changed_on_resume(run1, data, clean_code, key, old, new):
    edit(L.RunLayout.of(run1).task2_manifest,
         lambda d: d.update(resumed=[{"from_epoch": 2, "changed": {key: [old, new]}}]))
    assert any(v.where.endswith(f"resumed.{key}") for v in _fixed_din_violations(run1, data, clean_code))


def test_rule_check_warns_of_a_tunable_key_changed_on_resume(run1, data, clean_code):
    """One of the five keys changed mid-run is a hand-made schedule, not a tuned value: a warning."""
    edit(L.RunLayout.of(run1).task2_manifest, lambda d: d.update(resumed=[
        {"from_epoch": 2, "changed": {"learning_rate": [1e-3, 1e-4]}}, {"from_epoch": 3, "changed": {}}]))
    report = run_check(run1, data, "task1", clean_code)
    assert report.ok
    assert [w.where.rsplit(":", 1)[-1] for w in report.warnings if w.rule == "fixed-din"] == ["resumed.learning_rate"]


@pytest.mark.parametrize("resumed", ["lr_decay_factor", [1], [{"changed": [KEY]}]])
def test_rule_check_flags_an_unreadable_resume_record(run1, data, clean_code, resumed):
    edit(L.RunLayout.of(run1).task2_manifest, lambda d: d.update(resumed=resumed))
    assert any(v.where.endswith("resumed") for v in _fixed_din_violations(run1, data, clean_code))

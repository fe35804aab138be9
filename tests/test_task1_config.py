"""task1.config: typed config, one KitError naming key, value and range."""
from __future__ import annotations

import pytest

from mmctr.errors import KitError
from task1.config import load_config, parse_sets, usable_cores

from task1_factory import PARTS


@pytest.mark.parametrize("item,match", [
    ("image.workers=abc", r"'image.workers' = 'abc'.*valid integer"),
    ("runtime.seed=abc", r"'runtime.seed' = 'abc'.*valid integer"),
    ("text.max_length=-1", r"'text.max_length' = -1.*greater than or equal to 1"),
    ("fusion.weights.text=abc", r"'fusion.weights.text' = 'abc'.*valid number"),
    ("fusion.output_norm=-1", r"'fusion.output_norm' = -1.*'provided' .*or a number in \(0, 1000\]"),
    ("fusion.output_norm=unit", r"'fusion.output_norm' = 'unit'.*'provided' .*or a number in \(0, 1000\]"),
    ("fusion.holdout=2", r"'fusion.holdout' = 2.*less than or equal to 0.5"),
    ("runtime.device=foo", r"'runtime.device' = 'foo'.*auto, cpu, cuda or cuda:N"),
    ("tags.dim=100000", r"'tags.dim' = 100000.*less than or equal to 1024"),
    ("text.batch_size=true", r"'text.batch_size' = True.*valid integer"),
    ("behaviour.item_seq=1", r"'behaviour.item_seq' = 1.*valid boolean"),
    ("fusion.temperature=0", r"'fusion.temperature' = 0.*greater than or equal to 0.001"),
    ("image.precision=fp8", r"'image.precision' = 'fp8'"),
    ("fusion.weights.video=1", r"unknown config key 'fusion.weights.video'"),
])
def test_bad_values_are_one_error_naming_key_value_range(item, match):
    with pytest.raises(KitError, match=match):
        load_config("default", parse_sets([item]))


def test_all_zero_weights_are_refused():
    with pytest.raises(KitError, match=r"every enabled part has fusion weight 0"):
        load_config("default", parse_sets([f"fusion.weights.{p}=0" for p in PARTS]))


def test_yaml_number_forms_are_numbers_and_fields_are_typed():
    cfg = load_config("default", parse_sets(["fusion.temperature=5e-2", "fusion.lr=1e-3"]))
    assert cfg.fusion.temperature == 0.05 and isinstance(cfg.fusion.temperature, float)
    assert cfg.fusion.lr == 0.001
    assert cfg.image.workers == usable_cores() >= 1
    assert load_config("default").image.workers == usable_cores()

"""The typed config layer shared by task1 and task2 (pydantic v2).

A config is a tree of `Section` models: every key has a type and a range, unknown keys are
refused, bools are never ints and only true/false (YAML 1.2: `yes`/`on` are strings, refused for a
bool key), YAML number forms such as `5e-2` are numbers. Sources merge in
order (defaults <- YAML file <- `--set a.b=value` overrides) and a bad value is one KitError
naming the key, the value and what is allowed.
"""
from __future__ import annotations

import re
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from . import yamlconfig
from .errors import KitError

# Number-looking strings ('5e-2' quoted in YAML, or values from other sources) are read as numbers;
# unquoted YAML numbers already are (mmctr.yamlconfig reads YAML 1.2).
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


class Section(BaseModel):
    """Base of every config model: strict types, no unknown keys, checked on assignment."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


S = TypeVar("S", bound=Section)


def yaml_value(text: str):
    """One `--set` value parsed as YAML, with YAML 1.2 number forms (5e-2) and booleans read."""
    try:
        value = yamlconfig.load(text)
    except yaml.YAMLError as exc:
        raise KitError(f"value {text!r} is not valid YAML: {exc}") from None
    return numbers(value)


def numbers(value):
    """Recursively turn number-looking strings ('5e-2') into floats."""
    if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [numbers(v) for v in value]
    return value


def parse_sets(items) -> dict:
    """['fusion.method=pca', 'lr=1e-3'] -> nested dict (dotted keys become sections)."""
    out: dict = {}
    for item in items or ():
        if "=" not in item:
            raise KitError(f"override '{item}' is not KEY=VALUE (e.g. fusion.method=pca)")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise KitError(f"override '{item}' has an empty key")
        try:
            value = yaml_value(text)
        except KitError as exc:
            raise KitError(f"override {key}: {exc}") from None
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise KitError(f"override {key}: '{p}' is given both as a value and as a section")
        node[parts[-1]] = value
    return out


def merge(base: dict, over: dict) -> dict:
    """Deep-merge `over` into a copy of `base` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown config key '{loc}'"
    if err["type"] == "missing":
        return f"config key '{loc}' is required"
    shown = f" = {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
    if err["type"] in ("bool_type", "bool_parsing"):
        return f"config key '{loc}'{shown}: {err['msg']}; use true or false"
    return f"config key '{loc}'{shown}: {err['msg']}"


def build(model: type[S], raw: dict, source: str | None = None) -> S:
    """Validate `raw` into `model`; every problem named with its dotted key, one KitError."""
    try:
        return model.model_validate(numbers(raw or {}))
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors()]
        where = f"{source}: " if source else ""
        known = ""
        if any(e["type"] == "extra_forbidden" for e in exc.errors()) and len(exc.errors()) == 1:
            loc = exc.errors()[0]["loc"][:-1]
            node = model
            for part in loc:
                field = node.model_fields.get(str(part)) if isinstance(node, type) else None
                node = field.annotation if field is not None else None
            if isinstance(node, type) and issubclass(node, BaseModel):
                known = f" (known: {', '.join(sorted(node.model_fields))})"
        raise KitError(where + "; ".join(problems) + known) from None


def read_yaml(path) -> dict:
    """A YAML config file's top-level mapping, numbers normalised (see `numbers`)."""
    return numbers(yamlconfig.read_mapping(path))


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts."""
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        name = f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, name + ".")
        elif a != b:
            keys.append(name)
    return keys

"""Named YAML configs shared by task1 and task2: find a config by name or path, read it.

Booleans and numbers are read as YAML 1.2 has them, not as PyYAML's YAML 1.1: only true/false
(True, TRUE, False, FALSE) are booleans, so yes/no/on/off stay strings and a bool key given one is
refused by name (`on: off` would be {True: False}); `010` is ten (1.1: octal 8), `1:30` a string
(1.1: sexagesimal 90), `0o10` octal, `0x1F` hex, `1_000` a thousand.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from .errors import KitError

BOOL_TAG = "tag:yaml.org,2002:bool"
INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
BOOL_WORDS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"
                    r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


class Loader(yaml.SafeLoader):
    """yaml.SafeLoader with YAML 1.2 booleans and numbers."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (BOOL_TAG, INT_TAG, FLOAT_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_yaml_bool(self, node):
        value = self.construct_scalar(node)
        if value not in BOOL_WORDS:
            raise yaml.constructor.ConstructorError(
                None, None, f"{value!r} is not a boolean; use true or false", node.start_mark)
        return BOOL_WORDS[value]

    def construct_yaml_int(self, node):
        value = self.construct_scalar(node).replace("_", "")
        if not _INT.match(value):
            raise yaml.constructor.ConstructorError(
                None, None, f"{value!r} is not a YAML 1.2 integer", node.start_mark)
        if value.startswith(("0o", "0x")):
            return int(value[2:], 8 if value[1] == "o" else 16)
        return int(value, 10)


Loader.add_implicit_resolver(BOOL_TAG, re.compile(f"^(?:{'|'.join(BOOL_WORDS)})$"), list("tTfF"))
Loader.add_implicit_resolver(INT_TAG, _INT, list("-+0123456789"))
Loader.add_implicit_resolver(FLOAT_TAG, _FLOAT, list("-+.0123456789"))
Loader.add_constructor(BOOL_TAG, Loader.construct_yaml_bool)
Loader.add_constructor(INT_TAG, Loader.construct_yaml_int)


def load(text: str):
    """YAML text -> Python values (safe types, YAML 1.2 booleans)."""
    return yaml.load(text, Loader=Loader)


def config_path(name_or_path, config_dir: Path) -> Path:
    """A .yaml path, or NAME for config_dir/NAME.yaml; unknown names list the known ones."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if p.is_file():
            return p
        raise KitError(f"config file not found: {p}")
    named = Path(config_dir) / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    known = sorted(q.stem for q in Path(config_dir).glob("*.yaml"))
    raise KitError(f"config '{name_or_path}' not found: give a .yaml path or one of {', '.join(known)}")


def read_mapping(path: Path) -> dict:
    """The YAML file's top-level mapping (empty file = {}); clear errors for bad YAML."""
    try:
        raw = load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise KitError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise KitError(f"{path}: a config must be a mapping of keys to values")
    return raw

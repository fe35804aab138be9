"""Named YAML configs shared by task1 and task2: find a config by name or path, read it."""
from __future__ import annotations

from pathlib import Path

import yaml

from .errors import KitError


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
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise KitError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise KitError(f"{path}: a config must be a mapping of keys to values")
    return raw

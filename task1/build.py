"""`task1 build`: encode the enabled parts, fuse them to 128-D, write item_info.parquet + manifest.

Each part (text, image, tags, behaviour, precomputed) is one function in PART_BUILDERS that
returns named `Part`s; build() checks every output and the config before any work, loops over
the enabled parts, fuses, writes; `<out>/` holds what `mmctr.rundir.Task1Dir` names.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.io import (Timer, check_alloc, check_writable, file_sha256, read_parquet, read_parquet_metadata,
                      read_parquet_schema)
from mmctr.item_info import read_item_info, write_item_info
from mmctr.rundir import Task1Dir, hash_inputs, portable, write_manifest
from mmctr.runtime import resolve_device, set_threads
from mmctr.paths import DataPaths, refuse_data_write

from . import behaviour as behaviour_mod
from . import fuse as fuse_mod
from . import precomputed as precomputed_mod
from . import tags as tags_mod
from . import weights as weights_mod
from .cache import DEFAULT_DIR, EncoderCache, cache_key
from .config import Task1Config
from .encoders import image as image_enc
from .encoders import text as text_enc

FALLBACK = ("an item without a title, a readable cover image, tags, behaviour or a precomputed "
            "feature gets that part's mean vector (zero after centring), so the other parts decide "
            "its embedding")

log = logging.getLogger("task1.build")


@contextlib.contextmanager
def _both(a, b):
    with a, b:
        yield


@dataclass
class Items:
    n: int
    titles: list  # n+1 strings, "" = no title
    tags: np.ndarray  # (n+1, 5) int64
    path: Path


def read_items(paths: DataPaths) -> Items:
    """Titles and tags of item_feature.parquet; row i = item i; one KitError for a bad file."""
    path = paths.require(C.ITEM_FEATURE)
    schema = read_parquet_schema(path, "item_feature")
    missing = [c for c in (C.ITEM_ID, C.ITEM_TITLE, C.ITEM_TAGS) if c not in schema.names]
    if missing:
        raise KitError(f"{path}: missing column(s) {missing}")
    title_type = schema.field(C.ITEM_TITLE).type
    if not (pa.types.is_string(title_type) or pa.types.is_large_string(title_type) or pa.types.is_null(title_type)):
        raise KitError(f"{path}: column {C.ITEM_TITLE} must hold strings, got {title_type}")
    t = read_parquet(path, [C.ITEM_ID, C.ITEM_TITLE, C.ITEM_TAGS], "item_feature")
    if not pa.types.is_integer(t.schema.field(C.ITEM_ID).type):
        raise KitError(f"{path}: column {C.ITEM_ID} must hold integers, got {t.schema.field(C.ITEM_ID).type}")
    ids = t.column(C.ITEM_ID).to_numpy(zero_copy_only=False).astype(np.int64)
    n = len(ids)
    if n == 0:
        raise KitError(f"{path} has no items")
    if ids.min() < 1 or ids.max() != n or len(np.unique(ids)) != n:
        raise KitError(f"{path}: item_id must be exactly 1..{n} (one row per item); "
                       f"got min {ids.min()}, max {ids.max()}, {len(np.unique(ids))} distinct")
    titles = [""] * (n + 1)
    for i, title in zip(ids, t.column(C.ITEM_TITLE).to_pylist()):
        titles[i] = title.strip() if isinstance(title, str) else ""
    tag_col = t.column(C.ITEM_TAGS).combine_chunks()
    if not (pa.types.is_list(tag_col.type) or pa.types.is_large_list(tag_col.type)) or \
            not pa.types.is_integer(tag_col.type.value_type):
        raise KitError(f"{path}: column {C.ITEM_TAGS} must be a list of integers, got {tag_col.type}")
    lengths = tag_col.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    if np.any(lengths != C.TAGS_LEN):
        bad = int(np.flatnonzero(lengths != C.TAGS_LEN)[0])
        raise KitError(f"{path}: item_tags of item {ids[bad]} has {lengths[bad]} entries, expected {C.TAGS_LEN}")
    tags = np.zeros((n + 1, C.TAGS_LEN), dtype=np.int64)
    tags[ids] = tag_col.flatten().to_numpy(zero_copy_only=False).reshape(-1, C.TAGS_LEN)
    if (tags < 0).any():
        row = int(np.flatnonzero((tags < 0).any(axis=1))[0])
        raise KitError(f"{path}: item_tags of item {row} has a negative tag id {tags[row].min()} "
                       f"(0 = padding, tags are >= 1)")
    info = paths.table(C.ITEM_INFO)
    if info.is_file():
        rows = read_parquet_metadata(info, "item_info").num_rows
        if rows != n + 1:
            raise KitError(f"{path} has {n} items but {info} has {rows} rows (expected {n + 1})")
    return Items(n, titles, tags, path)


def images_fingerprint(image_dir: Path, n: int) -> str:
    """sha256 over (name, size, mtime) of every cover: cheap, changes when any image does."""
    h = hashlib.sha256()
    for i in range(1, n + 1):
        name = C.image_name(i)
        try:
            st = os.stat(image_dir / name)
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            h.update(f"{name}:missing\n".encode())
    return h.hexdigest()


def _sha_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=False).encode()).hexdigest()


@dataclass
class Part:
    """One part's raw vectors (n+1, d), which rows have it, its fusion weight and its report."""

    emb: np.ndarray
    mask: np.ndarray
    weight: float
    report: dict


@dataclass
class Context:
    paths: DataPaths
    cfg: Task1Config
    items: Items
    device: str
    seed: int
    cache: EncoderCache
    cache_dir: Path
    progress: bool
    inputs: dict = field(default_factory=dict)  # path -> sha256 (or a fingerprint) of what was read
    models: list = field(default_factory=list)  # manifest entries of weights / external features


def build_text(ctx: Context) -> dict:
    tc, n, titles = ctx.cfg.text, ctx.items.n, ctx.items.titles
    w = weights_mod.resolve_text(tc.model)
    ctx.models.append(w.manifest_entry(ctx.cache_dir))
    have = np.array([bool(t) for t in titles])
    have[0] = False
    ids = np.flatnonzero(have)
    report = {"model": w.model_id(), "empty_titles": int(n - len(ids))}
    if len(ids) == 0:  # nothing to encode: every item falls back
        log.warning("text: no item has a title; the text part is empty")
        return {"text": Part(np.zeros((n + 1, 1), np.float32), have, part_weight(ctx, "text"),
                             {**report, "dim": 0, "cache_hit": None, "items_per_s": None})}
    key = cache_key(part="text", model=w.model_id(), weights=w.sha256(ctx.cache_dir),
                    max_length=tc.max_length, prefix=tc.prefix,
                    inputs=_sha_json([titles[i] for i in ids]), ids=_sha_json(ids.tolist()))
    timer = Timer()
    with timer("encode"):
        got, hit = ctx.cache.get_or_compute(
            "text", key, {"model": w.model_id(), "items": int(len(ids))},
            lambda: {"emb": text_enc.encode([titles[i] for i in ids], w, tc, ctx.device, ctx.progress)})
    emb = np.zeros((n + 1, got["emb"].shape[1]), dtype=np.float32)
    emb[ids] = got["emb"]
    report.update(dim=int(emb.shape[1]), cache_hit=hit,
                  items_per_s=None if hit else round(len(ids) / max(timer.seconds["encode"], 1e-9), 1))
    return {"text": Part(emb, have, part_weight(ctx, "text"), report)}


def build_image(ctx: Context) -> dict:
    ic, n = ctx.cfg.image, ctx.items.n
    image_dir = ctx.paths.require_images()
    w = weights_mod.resolve_image(ic.model, ic.checkpoint, ic.pretrained)
    ctx.models.append(w.manifest_entry(ctx.cache_dir))
    fp = images_fingerprint(image_dir, n)
    precision = ic.precision
    if precision == "auto":
        precision = "bf16" if ctx.device.startswith("cuda") else "fp32"
    key = cache_key(part="image", model=w.model_id(), weights=w.sha256(ctx.cache_dir),
                    image_size=ic.image_size, precision=precision, inputs=fp, n=n,
                    preprocess=image_enc.PREPROCESS_VERSION)
    timer = Timer()
    with timer("encode"):
        got, hit = ctx.cache.get_or_compute(
            "image", key, {"model": w.model_id(), "items": n, "images_fingerprint": fp},
            lambda: dict(zip(("emb", "status"), image_enc.encode(
                image_dir, np.arange(1, n + 1), w, ic.model_copy(update={"precision": precision}),
                ctx.device, ctx.progress))))
    emb = np.zeros((n + 1, got["emb"].shape[1]), dtype=np.float32)
    emb[1:] = got["emb"]
    status = np.concatenate([[image_enc.OK], got["status"]])
    ok = status == image_enc.OK
    ok[0] = False
    ctx.inputs[str(image_dir.resolve())] = f"stat-fingerprint:{fp}"
    report = {"model": w.model_id(), "pretrained": w.pretrained, "dim": int(emb.shape[1]),
              "preprocess": w.preprocess,
              "missing": int((status[1:] == image_enc.MISSING).sum()),
              "unreadable": int((status[1:] == image_enc.UNREADABLE).sum()), "cache_hit": hit,
              "images_per_s": None if hit else round(n / max(timer.seconds["encode"], 1e-9), 1),
              "first_missing": [int(i) for i in np.flatnonzero(status == image_enc.MISSING)[:10]],
              "first_unreadable": [int(i) for i in np.flatnonzero(status == image_enc.UNREADABLE)[:10]]}
    return {"image": Part(emb, ok, part_weight(ctx, "image"), report)}


def build_tags(ctx: Context) -> dict:
    emb, has, explained, vocab = tags_mod.tag_embeddings(ctx.items.tags, ctx.cfg.tags.dim, ctx.seed)
    report = {"dim": int(emb.shape[1]), "distinct_tags": vocab,
              "items_without_tags": int(ctx.items.n - has[1:].sum()), "svd_explained": round(explained, 4)}
    return {"tags": Part(emb, has, part_weight(ctx, "tags"), report)}


def build_behaviour(ctx: Context) -> dict:
    bc, paths, n = ctx.cfg.behaviour, ctx.paths, ctx.items.n
    srcs = []
    if bc.item_seq:
        srcs.append(paths.require(C.ITEM_SEQ_TABLE))
    if bc.train_sequences:
        srcs.append(paths.require(C.TRAIN))
    src_sha = hash_inputs(srcs)
    key = cache_key(part="behaviour", cfg=bc.model_dump(), seed=ctx.seed, n=n, inputs=list(src_sha.values()))

    def compute():
        e, wm, st, _ = behaviour_mod.behaviour_embeddings(paths, n, bc, ctx.seed)
        return {"emb": e, "warm": wm, "stats": np.array(json.dumps(st))}

    got, hit = ctx.cache.get_or_compute("behaviour", key, {"sources": [str(p) for p in srcs]}, compute)
    ctx.inputs.update(src_sha)
    warm = got["warm"].astype(bool)
    return {"behaviour": Part(got["emb"], warm, part_weight(ctx, "behaviour"),
                              {**json.loads(str(got["stats"])), "cache_hit": hit})}


def build_precomputed(ctx: Context) -> dict:
    out = {}
    for src in ctx.cfg.precomputed.sources:
        emb, mask, report, read = precomputed_mod.load_source(src, ctx.paths, ctx.items.n, ctx.items.path, ctx.inputs)
        for path, sha in read.items():
            ctx.inputs[path] = sha
            if src.file is not None:  # outside the data dir: declared like weights, by sha256
                ctx.models.append({"name": src.part_name(), "kind": "precomputed", "source": "local",
                                   "path": path, "sha256": sha})
        out[src.part_name()] = Part(emb, mask, float(src.weight), report)
    return out


def part_weight(ctx: Context, part: str) -> float:
    return float(getattr(ctx.cfg.fusion.weights, part))


PART_BUILDERS = {
    "text": build_text,
    "image": build_image,
    "tags": build_tags,
    "behaviour": build_behaviour,
    "precomputed": build_precomputed,
}


def check_outputs(out: Path, paths: DataPaths, cache_dir, use_cache: bool) -> None:
    """Every output checked before any work: not in the data dir, writable."""
    refuse_data_write(out, paths.root, "--out")
    check_writable(Task1Dir(out).item_info, "--out")
    if use_cache:
        refuse_data_write(cache_dir, paths.root, "--cache-dir")
        check_writable(Path(cache_dir) / "text", "--cache-dir")


def _logging(out: Path, progress: bool):
    out.mkdir(parents=True, exist_ok=True)
    handlers = [logging.FileHandler(Task1Dir(out).log, mode="w")]
    handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    if progress:
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[-1].setFormatter(logging.Formatter("task1: %(message)s"))
    for h in handlers:
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handlers


def build(data_dir, cfg: Task1Config, out, cache_dir=DEFAULT_DIR, use_cache: bool = True,
          progress: bool = True) -> dict:
    """Run the whole task1 build; returns the manifest dict."""
    if not isinstance(cfg, Task1Config):
        raise TypeError("cfg must be a task1.config.Task1Config (use task1.config.load_config)")
    paths = DataPaths.resolve(data_dir)
    out = Path(out)
    check_outputs(out, paths, cache_dir, use_cache)
    device = str(resolve_device(cfg.runtime.device))
    handlers = _logging(out, progress)
    try:
        return _build(paths, cfg, out, cache_dir, use_cache, progress, device)
    except KitError as exc:
        log.error("error: %s", exc)
        raise
    except Exception:
        log.exception("unexpected failure")
        raise
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()


def _build(paths, cfg: Task1Config, out: Path, cache_dir, use_cache, progress, device) -> dict:
    # CPU seconds beside the wall clock: on shared cores the wall clock says how busy the machine
    # was, the CPU time what the step cost
    wall, cpu = Timer(), Timer(time.process_time)

    def timer(name):
        return _both(wall(name), cpu(name))

    set_threads(cfg.runtime.num_threads)  # torch and parquet decoding: the same budget of cores
    bars = progress and sys.stderr.isatty()
    log.info("build %s -> %s on %s; parts: %s", paths.root, out, device, ", ".join(cfg.enabled_parts()))
    with timer("read_items"):
        items = read_items(paths)
    ctx = Context(paths, cfg, items, device, cfg.runtime.seed, EncoderCache(cache_dir, enabled=use_cache),
                  Path(cache_dir), bars, inputs=hash_inputs([items.path]))
    parts: dict = {}
    for name in cfg.enabled_parts():
        with timer(name):
            got = PART_BUILDERS[name](ctx)
        parts.update(got)
        for pname, part in got.items():
            log.info("%s: %d-D, %d of %d items have it, %.1f s%s", pname, part.emb.shape[1],
                     int(part.mask[1:].sum()), items.n, wall.seconds[name],
                     " (cache hit)" if part.report.get("cache_hit") else "")
    # fusion prepares the float32 parts in place; a float64 part is copied once
    check_alloc((items.n + 1) * sum(p.emb.shape[1] for p in parts.values()) * 4, "fusion of the parts")
    warm = parts["behaviour"].mask if "behaviour" in parts else None
    provided = paths.table(C.ITEM_INFO)
    provided_info = read_item_info(provided) if provided.is_file() else None
    if provided_info is not None:
        ctx.inputs.update(hash_inputs([provided]))
    norm = cfg.fusion.output_norm
    if norm == "provided":
        norm = fuse_mod.provided_norm(provided_info[1]) if provided_info is not None else fuse_mod.UNIT_VARIANCE_NORM
    with timer("fusion"):
        emb, fusion_info = fuse_mod.fuse({k: p.emb for k, p in parts.items()},
                                         {k: p.mask for k, p in parts.items()},
                                         {k: p.weight for k, p in parts.items()}, cfg.fusion, warm,
                                         cfg.runtime.seed, device=device,
                                         progress=(lambda it, **kw: tqdm(it, **kw)) if bars else None,
                                         copy=False, norm=norm)  # the parts' arrays are not used after fusion
    log.info("fusion: %s, %.1f s", fusion_info.get("method"), wall.seconds["fusion"])
    report = {k: p.report for k, p in parts.items()}
    report["fusion"] = fusion_info
    with timer("write"):
        item_info = Task1Dir(out).item_info
        # item_tags must stay exactly the provided ones (only item_emb_d128 may change)
        out_tags = provided_info[0] if provided_info is not None else items.tags
        write_item_info(item_info, out_tags, emb)
    for t in (wall, cpu):
        t.seconds["total"] = round(sum(t.seconds.values()), 3)
    image = report.get("image", {})
    manifest = write_manifest(
        Task1Dir(out).manifest, kind="task1", config=cfg.dump(), inputs=portable(ctx.inputs, paths.root, out),
        models=ctx.models, timings=wall.seconds, cpu_timings=cpu.seconds,
        explained_variance={"fusion": fusion_info.get("explained_variance"),
                            "tags_svd": report.get("tags", {}).get("svd_explained"),
                            "behaviour_svd": report.get("behaviour", {}).get("svd_explained")},
        missing_images=image.get("missing", 0), unreadable_images=image.get("unreadable", 0),
        fallback=FALLBACK, n_items=items.n, device=device,
        parts=report, cache={"dir": str(Path(cache_dir).resolve()), "enabled": use_cache,
                             "hits": ctx.cache.hits, "misses": ctx.cache.misses},
        outputs=portable({item_info: file_sha256(item_info)}, paths.root, out))
    log.info("wrote %s in %.1f s (%.1f s CPU)", item_info, wall.seconds["total"], cpu.seconds["total"])
    return manifest

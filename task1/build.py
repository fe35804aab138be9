"""`task1 build`: encode the parts, fuse them to 128-D, write item_info.parquet + its manifest."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.io import Timer, file_sha256
from mmctr.item_info import read_item_info, write_item_info
from mmctr.manifest import hash_inputs, write_manifest
from mmctr.paths import DataPaths

from . import behaviour as behaviour_mod
from . import fuse as fuse_mod
from . import tags as tags_mod
from . import weights as weights_mod
from .cache import DEFAULT_DIR, EncoderCache, cache_key
from .encoders import image as image_enc
from .encoders import text as text_enc

ITEM_INFO_NAME = "item_info.parquet"
MANIFEST_NAME = "item_info.manifest.json"
FALLBACK = ("an item without a title, a readable cover image, tags or behaviour gets that part's "
            "mean vector (zero after centring), so the other parts decide its embedding")


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KitError(f"runtime.device={name} but CUDA is not available; use auto or cpu")
    return name


def read_items(paths: DataPaths):
    """(n_items, titles list (n+1), tags (n+1, 5)) from item_feature.parquet; row i = item i."""
    path = paths.require(C.ITEM_FEATURE)
    schema = pq.read_schema(path)
    missing = [c for c in (C.ITEM_ID, C.ITEM_TITLE, C.ITEM_TAGS) if c not in schema.names]
    if missing:
        raise KitError(f"{path}: missing column(s) {missing}")
    t = pq.read_table(path, columns=[C.ITEM_ID, C.ITEM_TITLE, C.ITEM_TAGS])
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
    lengths = tag_col.value_lengths().to_numpy(zero_copy_only=False)
    if np.any(lengths != C.TAGS_LEN):
        bad = int(np.flatnonzero(lengths != C.TAGS_LEN)[0])
        raise KitError(f"{path}: item_tags of item {ids[bad]} has {lengths[bad]} entries, expected {C.TAGS_LEN}")
    tags = np.zeros((n + 1, C.TAGS_LEN), dtype=np.int64)
    tags[ids] = tag_col.flatten().to_numpy(zero_copy_only=False).reshape(-1, C.TAGS_LEN)
    info = paths.table(C.ITEM_INFO)
    if info.is_file():
        rows = pq.read_metadata(info).num_rows
        if rows != n + 1:
            raise KitError(f"{path} has {n} items but {info} has {rows} rows (expected {n + 1})")
    return n, titles, tags, path


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


def build(data_dir, cfg: dict, out, cache_dir=DEFAULT_DIR, use_cache: bool = True,
          progress: bool = True) -> dict:
    """Run the whole task1 build; returns the manifest dict."""
    timer = Timer()
    paths = DataPaths.resolve(data_dir)
    rt = cfg["runtime"]
    if rt["num_threads"]:
        torch.set_num_threads(int(rt["num_threads"]))
    device = resolve_device(rt["device"])
    seed = int(rt["seed"])
    cache = EncoderCache(cache_dir, enabled=use_cache)
    out = Path(out)
    bar = (lambda it, **kw: tqdm(it, **kw)) if progress else None

    with timer("read_items"):
        n, titles, tags, feature_path = read_items(paths)
    input_hashes = hash_inputs([feature_path])
    parts, masks, models, report = {}, {}, [], {}
    warm = None

    if cfg["text"]["enabled"]:
        tc = cfg["text"]
        with timer("text"):
            w = weights_mod.resolve_text(tc["model"])
            models.append(w.manifest_entry(cache_dir))
            have = np.array([bool(t) for t in titles])
            have[0] = False
            ids = np.flatnonzero(have)
            key = cache_key(part="text", model=w.model_id(), weights=w.sha256(cache_dir),
                            max_length=tc["max_length"], prefix=tc["prefix"],
                            inputs=_sha_json([titles[i] for i in ids]), ids=_sha_json(ids.tolist()))
            got, hit = cache.get_or_compute(
                "text", key, {"model": w.model_id(), "items": int(len(ids))},
                lambda: {"emb": text_enc.encode([titles[i] for i in ids], w, tc, device, progress)})
            emb = np.zeros((n + 1, got["emb"].shape[1]), dtype=np.float32)
            emb[ids] = got["emb"]
        parts["text"], masks["text"] = emb, have
        report["text"] = {"model": w.model_id(), "dim": int(emb.shape[1]), "empty_titles": int(n - len(ids)),
                          "cache_hit": hit, "items_per_s": None if hit else round(len(ids) / max(timer.seconds["text"], 1e-9), 1)}

    missing_images = 0
    if cfg["image"]["enabled"]:
        ic = cfg["image"]
        image_dir = paths.require_images()
        with timer("image"):
            w = weights_mod.resolve_image(ic["model"], ic["checkpoint"])
            models.append(w.manifest_entry(cache_dir))
            fp = images_fingerprint(image_dir, n)
            precision = ic["precision"]
            if precision == "auto":
                precision = "bf16" if device.startswith("cuda") else "fp32"
            key = cache_key(part="image", model=w.model_id(), weights=w.sha256(cache_dir),
                            image_size=ic["image_size"], precision=precision, inputs=fp, n=n)
            got, hit = cache.get_or_compute(
                "image", key, {"model": w.model_id(), "items": n, "images_fingerprint": fp},
                lambda: dict(zip(("emb", "status"), image_enc.encode(
                    image_dir, np.arange(1, n + 1), w, {**ic, "precision": precision}, device, progress))))
            emb = np.zeros((n + 1, got["emb"].shape[1]), dtype=np.float32)
            emb[1:] = got["emb"]
            status = np.concatenate([[image_enc.OK], got["status"]])
        ok = status == image_enc.OK
        ok[0] = False
        missing_images = int((status[1:] == image_enc.MISSING).sum())
        unreadable = int((status[1:] == image_enc.UNREADABLE).sum())
        parts["image"], masks["image"] = emb, ok
        report["image"] = {"model": w.model_id(), "dim": int(emb.shape[1]), "missing": missing_images,
                           "unreadable": unreadable, "cache_hit": hit,
                           "images_per_s": None if hit else round(n / max(timer.seconds["image"], 1e-9), 1),
                           "first_missing": [int(i) for i in np.flatnonzero(status == image_enc.MISSING)[:10]]}
        read_files_images = {str(image_dir.resolve()): f"stat-fingerprint:{fp}"}
    else:
        read_files_images = {}

    if cfg["tags"]["enabled"]:
        with timer("tags"):
            emb, has, explained = tags_mod.tag_embeddings(tags, int(cfg["tags"]["dim"]), seed)
        parts["tags"], masks["tags"] = emb, has
        report["tags"] = {"dim": int(emb.shape[1]), "items_without_tags": int(n - has[1:].sum()),
                          "svd_explained": round(explained, 4)}

    if cfg["behaviour"]["enabled"]:
        bc = cfg["behaviour"]
        with timer("behaviour"):
            srcs = []
            if bc["item_seq"]:
                srcs.append(paths.require(C.ITEM_SEQ_TABLE))
            if bc["train_sequences"]:
                srcs.append(paths.require(C.TRAIN))
            src_sha = hash_inputs(srcs)
            key = cache_key(part="behaviour", cfg=bc, seed=seed, n=n, inputs=list(src_sha.values()))

            def compute():
                e, wm, st, _ = behaviour_mod.behaviour_embeddings(paths, n, bc, seed)
                return {"emb": e, "warm": wm, "stats": np.array(json.dumps(st))}

            got, hit = cache.get_or_compute("behaviour", key, {"sources": [str(p) for p in srcs]}, compute)
            input_hashes.update(src_sha)
        parts["behaviour"], warm = got["emb"], got["warm"].astype(bool)
        masks["behaviour"] = warm
        report["behaviour"] = {**json.loads(str(got["stats"])), "cache_hit": hit}

    with timer("fusion"):
        emb, fusion_info = fuse_mod.fuse(parts, masks, cfg["fusion"]["weights"], cfg["fusion"], warm,
                                         seed, device=device, progress=bar)
    report["fusion"] = fusion_info

    with timer("write"):
        item_info = out / ITEM_INFO_NAME
        provided = paths.table(C.ITEM_INFO)
        # item_tags must stay exactly the provided ones (only item_emb_d128 may change)
        out_tags = read_item_info(provided)[0] if provided.is_file() else tags
        write_item_info(item_info, out_tags, emb)
    timer.seconds["total"] = round(sum(timer.seconds.values()), 3)
    manifest = write_manifest(
        out / MANIFEST_NAME, kind="task1", config=cfg,
        inputs={**input_hashes, **read_files_images},
        models=models, timings=timer.seconds,
        explained_variance={"fusion": fusion_info.get("explained_variance"),
                            "tags_svd": report.get("tags", {}).get("svd_explained"),
                            "behaviour_svd": report.get("behaviour", {}).get("svd_explained")},
        missing_images=missing_images, fallback=FALLBACK, n_items=n, device=device,
        parts=report, cache={"dir": str(Path(cache_dir).resolve()), "enabled": use_cache,
                             "hits": cache.hits, "misses": cache.misses},
        outputs={str(item_info.resolve()): file_sha256(item_info)})
    return manifest

"""task1 benchmark: encoder throughput on this machine and validation AUC of the fixed DIN on
item_info built by task1 (text-only, multimodal PCA, multimodal + behaviour, learned fusion)
next to the provided embeddings, random 128-D vectors and the sample's oracle.

    python bench/bench_task1.py --data-dir data/sample              # an existing data root
    python bench/bench_task1.py --make-sample /tmp/b1 --items 1000  # generate one first
    python bench/bench_task1.py --full-provided /tmp/b2 --full-users 6000000  # provided_features at the real sizes
Not a test: prints figures (and writes them to <out>/bench_task1.json).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {  # name -> (config, overrides)
    "text_only": ("text_only", {}),
    "content_pca": ("default", {"behaviour": {"enabled": False}, "fusion": {"method": "pca"}}),
    "multimodal_pca": ("default", {"fusion": {"method": "pca"}}),
    "multimodal_contrastive": ("default", {}),
    "provided_features": ("provided_features", {}),
}
FULL_ITEMS = 91_717  # MicroLens-1M


def make_full_features(root: Path, n: int = FULL_ITEMS, users: int = 1_000_000, seq_mean: float = 8,
                       seq_max: int = 100, train_rows: int = 500_000, seed: int = 0) -> Path:
    """Random data at the real item count: item_feature (BERT 768 + CLIP 1024 columns, tags),
    item_seq (`users` rows; lengths geometric with mean `seq_mean`, capped at `seq_max`: the real
    file has 6M rows, mean 8, max 100), a train table and item_info; no covers. Only the sizes
    are real (items are uniform at random: the most distinct co-occurring pairs, the worst case)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmctr import contract as C

    rng = np.random.default_rng(seed)
    (root / C.CTR_DIR).mkdir(parents=True, exist_ok=True)

    def lists(mat, typ):
        return pa.FixedSizeListArray.from_arrays(pa.array(mat.ravel(), typ), mat.shape[1]).cast(pa.list_(typ))

    tags = rng.integers(1, C.TAG_VOCAB, size=(n, C.TAGS_LEN))
    pq.write_table(pa.table({
        C.ITEM_ID: pa.array(np.arange(1, n + 1)), C.ITEM_TITLE: pa.array([""] * n),
        C.ITEM_TAGS: lists(tags, pa.int64()),
        C.TXT_EMB: lists(rng.standard_normal((n, C.BERT_DIM), dtype=np.float32), pa.float32()),
        C.IMG_EMB: lists(rng.standard_normal((n, C.CLIP_RN50_DIM), dtype=np.float32), pa.float32())}),
        root / C.ITEM_FEATURE.relpath)
    lens = rng.geometric(1.0 / seq_mean, users).clip(1, seq_max)
    offs = np.concatenate([[0], np.cumsum(lens)])
    if offs[-1] >= 2 ** 31:
        raise SystemExit(f"{offs[-1]:,} item_seq values do not fit one list column; fewer --full-users")
    vals = rng.integers(1, n + 1, int(offs[-1]), dtype=np.int32).astype(np.int64)
    pq.write_table(pa.table({C.USER_ID: pa.array(np.arange(1, users + 1)),
                             C.ITEM_SEQ: pa.ListArray.from_arrays(pa.array(offs.astype(np.int32)), pa.array(vals))}),
                   root / C.ITEM_SEQ_TABLE.relpath, row_group_size=1_000_000)
    del vals
    tl = rng.integers(1, 20, train_rows)
    toffs = np.concatenate([[0], np.cumsum(tl)]).astype(np.int32)
    pq.write_table(pa.table({C.ITEM_SEQ: pa.ListArray.from_arrays(pa.array(toffs),
                                                                  pa.array(rng.integers(1, n + 1, tl.sum()))),
                             C.ITEM_ID: pa.array(rng.integers(1, n + 1, train_rows)),
                             C.LABEL: pa.array(rng.integers(0, 2, train_rows).astype(np.float32))}),
                   root / C.TRAIN.relpath)
    item_tags = np.zeros((n + 1, C.TAGS_LEN), np.int64)
    item_tags[1:] = tags
    from mmctr.item_info import write_item_info
    write_item_info(root / C.ITEM_INFO.relpath, item_tags, np.zeros((n + 1, C.EMB_DIM), np.float32))
    return root


def bench_full_provided(root: Path, out: Path, threads: int, users: int, train_rows: int,
                        seq_mean: float = 8, seq_max: int = 100, overrides: dict | None = None) -> dict:
    """Build provided_features.yaml on 91,717 random items; wall and CPU seconds per part.
    The data is made once in `root` and reused (delete the folder to make it again)."""
    from task1.build import build
    from task1.config import load_config

    t0 = time.perf_counter()
    if not (root / "item_feature.parquet").is_file():
        make_full_features(root, users=users, seq_mean=seq_mean, seq_max=seq_max, train_rows=train_rows)
    made = round(time.perf_counter() - t0, 1)
    import pyarrow.parquet as pq

    from mmctr import contract as C
    meta = {t: pq.read_metadata(root / x.relpath).num_rows for t, x in (("item_seq_rows", C.ITEM_SEQ_TABLE),
                                                                         ("train_rows", C.TRAIN))}
    over = json.loads(json.dumps(overrides or {}))
    if threads:
        over.setdefault("runtime", {})["num_threads"] = threads
    cfg = load_config("provided_features", over)
    threads = cfg.runtime.num_threads
    load_before = os.getloadavg()  # other work on the machine: timings are only comparable at similar load
    t0, c0 = time.perf_counter(), time.process_time()
    m = build(root, cfg, out, cache_dir=out / "cache", use_cache=False, progress=False)
    total, cpu = round(time.perf_counter() - t0, 1), round(time.process_time() - c0, 1)
    res = {"items": m["n_items"], "threads": threads, **meta, "overrides": overrides or {},
           "load_avg": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
           "cpu_s": cpu, "data_made_s": made, "build_s": total,
           "timings": m["timings"], "cpu_timings": m.get("cpu_timings"), "fusion": m["parts"]["fusion"],
           "behaviour": m["parts"].get("behaviour")}
    print(f"provided_features on {m['n_items']:,} items, {meta['item_seq_rows']:,} item_seq rows, {threads} threads: "
          f"{total} s wall, {cpu} s CPU (user+sys)\n  wall per part: {m['timings']}\n  CPU per part: "
          f"{m.get('cpu_timings')}\n  load average 1/5/15 min before {res['load_avg']['before']}, after "
          f"{res['load_avg']['after']}", flush=True)
    return res


def throughput(paths, n: int, image_size, device: str, workers: int) -> dict:
    """items/s (text) and images/s (image), encoding only (model load timed apart)."""
    from task1 import weights
    from task1.build import read_items
    from task1.config import load_config
    from task1.encoders import image as image_enc
    from task1.encoders import text as text_enc

    cfg = load_config("default")
    items = read_items(paths)
    n_items, titles = items.n, items.titles
    n = min(n, n_items)
    out = {}
    w = weights.resolve_text(cfg.text.model)
    t0 = time.perf_counter()
    model = text_enc.load(w, device)
    out["text_load_s"] = round(time.perf_counter() - t0, 2)
    model.max_seq_length = cfg.text.max_length
    batch = [t or "empty" for t in titles[1:n + 1]]
    t0 = time.perf_counter()
    model.encode(batch, batch_size=cfg.text.batch_size, show_progress_bar=False)
    out["text_items_per_s"] = round(n / (time.perf_counter() - t0), 1)
    wi = weights.resolve_image(cfg.image.model)
    ic = cfg.image.model_copy(update={"image_size": image_size, "workers": workers})
    t0 = time.perf_counter()
    image_enc.encode(paths.images_dir, np.arange(1, n + 1), wi, ic, device, progress=False)
    out["images_per_s"] = round(n / (time.perf_counter() - t0), 1)
    out["image_size"] = image_size or 224
    out["items_timed"] = n
    return out


@click.command()
@click.option("--data-dir", type=click.Path(), help="an existing data root")
@click.option("--make-sample", type=click.Path(file_okay=False), help="generate a sample here first")
@click.option("--items", default=1000, show_default=True)
@click.option("--users", default=2000, show_default=True)
@click.option("--train", "n_train", default=30000, show_default=True)
@click.option("--valid", "n_valid", default=3000, show_default=True)
@click.option("--out", default="runs/bench_task1", show_default=True, type=click.Path(file_okay=False))
@click.option("--cache-dir", default="cache/task1", show_default=True)
@click.option("--image-size", type=int, default=128, show_default=True,
              help="image tower input size (0 = the model's own, 224 for EfficientNet-Lite0)")
@click.option("--throughput-items", default=200, show_default=True)
@click.option("--max-epochs", default=6, show_default=True, help="DIN epochs per variant")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=None,
              help="torch/BLAS threads [default: 2; --full-provided: the config's]")
@click.option("--skip-auc", is_flag=True)
@click.option("--full-provided", type=click.Path(file_okay=False),
              help="only time provided_features on 91,717 random items made in this folder")
@click.option("--full-users", default=1_000_000, show_default=True, help="--full-provided: item_seq rows")
@click.option("--full-train", default=500_000, show_default=True, help="--full-provided: train rows")
@click.option("--full-seq-mean", default=8.0, show_default=True, help="--full-provided: mean item_seq length")
@click.option("--full-seq-max", default=100, show_default=True, help="--full-provided: longest item_seq")
@click.option("--set", "sets", multiple=True, help="--full-provided: a config override a.b=v (repeatable)")
def main(data_dir, make_sample, items, users, n_train, n_valid, out, cache_dir, image_size,
         throughput_items, max_epochs, device, threads, skip_auc, full_provided, full_users, full_train,
         full_seq_mean, full_seq_max, sets):
    import torch

    if full_provided:
        from task1.config import parse_sets

        res = bench_full_provided(Path(full_provided), Path(out) / "full_provided", threads, full_users, full_train,
                                  full_seq_mean, full_seq_max, parse_sets(sets))
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "bench_full_provided.json").write_text(json.dumps(res, indent=2, default=str))
        return

    from mmctr import contract as C
    from mmctr.paths import DataPaths
    from mmctr.rundir import Task1Dir
    from mmctr.runtime import resolve_device
    from mmctr.sample import SampleConfig, generate
    from task1.build import build
    from task1.config import load_config
    from task1.evaluate import din_config, oracle_auc, random_item_info

    threads = threads or 2
    torch.set_num_threads(threads)
    if make_sample:
        generate(make_sample, SampleConfig(n_items=items, n_users=users, n_train=n_train, n_valid=n_valid,
                                           n_test=1000))
        data_dir = make_sample
    if not data_dir:
        raise click.UsageError("give --data-dir or --make-sample")
    paths = DataPaths.resolve(data_dir)
    dev = str(resolve_device(device))
    out = Path(out)
    report = {"machine": {"cpu_threads": threads, "device": dev,
                          "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
              "data_dir": str(paths.root)}
    report["throughput"] = throughput(paths, throughput_items, image_size or None, dev, workers=2)
    print(json.dumps(report["throughput"]), flush=True)

    builds = {}
    for name, (config, over) in VARIANTS.items():
        over = json.loads(json.dumps(over))
        over.setdefault("image", {})["image_size"] = image_size or None
        over.setdefault("runtime", {}).update(device=dev, num_threads=threads)
        cfg = load_config(config, over)
        t0 = time.perf_counter()
        m = build(paths.root, cfg, out / name, cache_dir=cache_dir, progress=False)
        builds[name] = {"seconds": round(time.perf_counter() - t0, 2), "timings": m["timings"],
                        "fusion": m["parts"]["fusion"], "cache_hits": m["cache"]["hits"]}
        print(f"built {name}: {builds[name]['seconds']} s, fusion {m['parts']['fusion']}", flush=True)
    report["builds"] = builds
    try:  # training-free quality on generated data: how much of the planted item latents survive
        from mmctr.item_info import read_item_info
        from mmctr.sample import latent_recovery

        rng = np.random.default_rng(0)
        provided = read_item_info(paths.table(C.ITEM_INFO))[1]
        embs = {"provided": provided, "random": rng.normal(size=provided.shape)}
        embs.update({k: read_item_info(Task1Dir(out / k).item_info)[1] for k in VARIANTS})
        report["latent_r2"] = {k: {n: round(v, 3) for n, v in latent_recovery(paths.root, e).items()}
                               for k, e in embs.items()}
        print("\n| item_info | R² item latent | R² topic | R² style |\n|---|---|---|---|")
        for k, r in report["latent_r2"].items():
            print(f"| {k} | {r['item']:.3f} | {r['topic']:.3f} | {r['style']:.3f} |", flush=True)
    except FileNotFoundError:
        pass  # not a generated sample: no planted latents to compare with
    if not skip_auc:
        from task2.train import train_model

        infos = {"provided": paths.table(C.ITEM_INFO),
                 "random": random_item_info(Task1Dir(out / "random").item_info, paths.table(C.ITEM_INFO))}
        infos.update({k: Task1Dir(out / k).item_info for k in VARIANTS})
        cfg = din_config(overrides={"num_threads": threads})
        aucs = {}
        for name, path in infos.items():
            t0 = time.perf_counter()
            res = train_model(cfg, paths.root, path, out / f"din_{name}_{int(time.time())}", device=dev,
                              max_epochs=max_epochs, quiet=True)
            aucs[name] = {"valid_auc": round(res["best_valid_auc"], 5), "best_epoch": res["best_epoch"],
                          "seconds": round(time.perf_counter() - t0, 1)}
            print(f"DIN on {name:24s} valid AUC {aucs[name]['valid_auc']:.5f} "
                  f"(best epoch {res['best_epoch']}, {aucs[name]['seconds']} s)", flush=True)
        oracle = oracle_auc(paths.root)
        report["auc"] = aucs
        report["oracle_valid_auc"] = oracle
        print("\n| item_info | valid AUC (fixed DIN) |\n|---|---|")
        for name, a in aucs.items():
            print(f"| {name} | {a['valid_auc']:.4f} |")
        if oracle is not None:
            print(f"| oracle (true p_click) | {oracle:.4f} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_task1.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: v for k, v in report.items() if k != "builds"}, indent=2, default=str))


if __name__ == "__main__":
    main()

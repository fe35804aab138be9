"""task1 benchmark: encoder throughput on this machine and validation AUC of the fixed DIN on
item_info built by task1 (text-only, multimodal PCA, multimodal + behaviour, learned fusion)
next to the provided embeddings, random 128-D vectors and the sample's oracle.

    python bench/bench_task1.py --data-dir data/sample              # an existing data root
    python bench/bench_task1.py --make-sample /tmp/b1 --items 1000  # generate one first
Not a test: prints figures (and writes them to <out>/bench_task1.json).
"""
from __future__ import annotations

import json
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
}


def throughput(paths, n: int, image_size, device: str, workers: int) -> dict:
    """items/s (text) and images/s (image), encoding only (model load timed apart)."""
    from task1 import weights
    from task1.build import read_items
    from task1.config import load_config
    from task1.encoders import image as image_enc
    from task1.encoders import text as text_enc

    cfg = load_config("default")
    n_items, titles, _, _ = read_items(paths)
    n = min(n, n_items)
    out = {}
    w = weights.resolve_text(cfg["text"]["model"])
    t0 = time.perf_counter()
    model = text_enc.load(w, device)
    out["text_load_s"] = round(time.perf_counter() - t0, 2)
    model.max_seq_length = cfg["text"]["max_length"]
    batch = [t or "empty" for t in titles[1:n + 1]]
    t0 = time.perf_counter()
    model.encode(batch, batch_size=cfg["text"]["batch_size"], show_progress_bar=False)
    out["text_items_per_s"] = round(n / (time.perf_counter() - t0), 1)
    wi = weights.resolve_image(cfg["image"]["model"])
    ic = {**cfg["image"], "image_size": image_size, "workers": workers}
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
@click.option("--threads", default=2, show_default=True)
@click.option("--skip-auc", is_flag=True)
def main(data_dir, make_sample, items, users, n_train, n_valid, out, cache_dir, image_size,
         throughput_items, max_epochs, device, threads, skip_auc):
    import torch

    from mmctr import contract as C
    from mmctr.paths import DataPaths
    from mmctr.sample import SampleConfig, generate
    from task1.build import build, resolve_device
    from task1.config import load_config
    from task1.evaluate import din_config, oracle_auc, random_item_info

    torch.set_num_threads(threads)
    if make_sample:
        generate(make_sample, SampleConfig(n_items=items, n_users=users, n_train=n_train, n_valid=n_valid,
                                           n_test=1000))
        data_dir = make_sample
    if not data_dir:
        raise click.UsageError("give --data-dir or --make-sample")
    paths = DataPaths.resolve(data_dir)
    dev = resolve_device(device)
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
        embs.update({k: read_item_info(out / k / "item_info.parquet")[1] for k in VARIANTS})
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
                 "random": random_item_info(out / "random" / "item_info.parquet", paths.table(C.ITEM_INFO))}
        infos.update({k: out / k / "item_info.parquet" for k in VARIANTS})
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

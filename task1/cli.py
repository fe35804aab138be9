"""`python -m task1`: build item_info.parquet (new item_emb_d128), evaluate it with the fixed DIN."""
from __future__ import annotations

import json
import time

import click

from mmctr import ledger
from mmctr.cli import run

from .cache import DEFAULT_DIR


@click.group(help=__doc__)
def main() -> None:
    pass


@main.command()
@click.option("--data-dir", required=True, type=click.Path(), help="organisers' data root")
@click.option("--config", "config", default="default", show_default=True,
              help="a YAML path or a name in task1/configs (default, text_only)")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="folder for item_info.parquet and item_info.manifest.json")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="override a config key, e.g. --set fusion.method=pca (repeatable)")
@click.option("--cache-dir", default=DEFAULT_DIR, show_default=True, type=click.Path(file_okay=False),
              help="encoder output cache")
@click.option("--no-cache", is_flag=True, help="encode again and do not write the cache")
@click.option("--device", default=None, help="auto | cpu | cuda[:N] (overrides runtime.device)")
@click.option("--quiet", is_flag=True, help="no progress bars")
def build(data_dir, config, out, sets, cache_dir, no_cache, device, quiet):
    """Encode titles, covers, tags and behaviour; fuse to 128-D; write item_info + manifest."""
    ledger.install("task1 build")
    from .build import build as run_build
    from .config import load_config, parse_sets

    over = parse_sets(sets)
    if device:
        over.setdefault("runtime", {})["device"] = device
    cfg = load_config(config, over)
    m = run_build(data_dir, cfg, out, cache_dir=cache_dir, use_cache=not no_cache, progress=not quiet)
    import os
    from pathlib import Path

    item_info = os.path.normpath(Path(out).resolve() / next(iter(m["outputs"])))
    click.echo(json.dumps({"item_info": item_info, "n_items": m["n_items"],
                           "missing_images": m["missing_images"], "timings": m["timings"],
                           "explained_variance": m["explained_variance"],
                           "fusion": m["parts"]["fusion"]}, indent=2))
    from mmctr import runs
    runs.after_build(out)  # <out>/item_info.report.png


@main.command()
@click.option("--data-dir", required=True, type=click.Path(), help="organisers' data root")
@click.option("--item-info", required=True, type=click.Path(dir_okay=False), help="the new item_info.parquet")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder for report.json")
@click.option("--baseline", "baseline", default=None, type=click.Path(dir_okay=False),
              help="item_info to compare with (default: the provided MicroLens_1M_x1/item_info.parquet)")
@click.option("--random/--no-random", "with_random", default=False, show_default=True,
              help="also train on random 128-D embeddings")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="DIN key the Task-1 track may change (learning_rate, batch_size, net_dropout, ...)")
@click.option("--max-epochs", type=int, default=None, help="cap the DIN's epochs (quick checks)")
@click.option("--device", default=None, help="auto | cpu | cuda[:N]")
@click.option("--engine", type=click.Choice(["kit", "fuxictr"]), default="kit", show_default=True,
              help="kit: task2's DIN; fuxictr: the organisers' FuxiCTR 2.3.7 DIN (`make fuxictr-env`)")
@click.option("--quiet", is_flag=True)
def evaluate(data_dir, item_info, out, baseline, with_random, sets, max_epochs, device, engine, quiet):
    """Train the fixed baseline DIN on the new and the provided item_info; report validation AUCs."""
    ledger.install("task1 evaluate")
    from .evaluate import evaluate as run_evaluate
    from mmctr import runs
    results = runs.runs_root_for(out)  # runs/results.csv gets one row per DIN
    runs.check_results(results, data_dir)
    t0 = time.perf_counter()

    report = run_evaluate(data_dir, item_info, out, baseline=baseline, with_random=with_random,
                          sets=sets, max_epochs=max_epochs, device=device, quiet=quiet, engine=engine)
    click.echo(json.dumps(report["summary"], indent=2))
    runs.after_evaluate(report, out, time.perf_counter() - t0, results)


@main.command()
@click.option("--data-dir", required=True, type=click.Path(), help="organisers' data root")
@click.option("--item-info", required=True, type=click.Path(dir_okay=False), help="the new item_info.parquet")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="folder for tune_results.csv, best_din.yaml and the trials' runs")
@click.option("--space", "space", default="tune_din", show_default=True,
              help="a tuner YAML path or a name in task1/configs")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="override a tuner key, e.g. --set trials=4 --set search=random (repeatable)")
@click.option("--baseline", default=None, type=click.Path(dir_okay=False),
              help="item_info each trial is compared with (default: the provided one)")
@click.option("--device", default=None, help="auto | cpu | cuda[:N]")
@click.option("--quiet", is_flag=True)
def tune(data_dir, item_info, out, space, sets, baseline, device, quiet):
    """Search the five DIN keys the Task-1 track may change; write the winner to best_din.yaml."""
    ledger.install("task1 tune")
    from mmctr.config import parse_sets

    from .tune import load_tune_config, tune as run_tune

    cfg = load_tune_config(space, parse_sets(sets))
    summary = run_tune(data_dir, item_info, out, cfg, baseline=baseline, device=device, quiet=quiet)
    click.echo(json.dumps(summary, indent=2))


def entry() -> None:
    """Console-script entry point (mmctr-task1)."""
    run(main)

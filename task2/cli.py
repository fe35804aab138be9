"""`python -m task2 train|predict`: one neural CTR model, trained end to end, predicting test."""
from __future__ import annotations

import json
import time

import click

from mmctr import contract as C
from mmctr import ledger
from mmctr import rundir as R
from mmctr.cli import run


@click.group(help=__doc__)
def main() -> None:
    pass


@main.command()
@click.option("--data-dir", required=True, type=click.Path(), help="organisers' data root")
@click.option("--config", "config", default="transformer_dcn", show_default=True,
              help="a config name (task2/configs/NAME.yaml) or a .yaml path")
@click.option("--item-info", type=click.Path(), help="item_info.parquet to use (default: the data's own)")
@click.option("--out", default="runs/task2", show_default=True, type=click.Path(file_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a config key (repeatable)")
@click.option("--max-epochs", type=int, help="cap on epochs (runtime budget)")
@click.option("--device", help="auto | cpu | cuda | cuda:N")
@click.option("--resume", is_flag=True, help=f"continue from OUT/{R.LAST}")
def train(data_dir, config, item_info, out, sets, max_epochs, device, resume):
    """Train, validate every epoch, keep the best checkpoint, stop early."""
    ledger.install("task2 train")
    from .config import load_config, parse_overrides
    from .train import train_model
    from mmctr import runs
    results = runs.runs_root_for(out)  # runs/results.csv gets this run's row
    runs.check_results(results, data_dir)
    if resume:  # its history is appended to and drawn at the end: a damaged one fails now, not then
        runs.read_history(out)
    t0 = time.perf_counter()

    overrides = parse_overrides(sets)
    if max_epochs is not None:
        overrides["max_epochs"] = max_epochs
    if device is not None:
        overrides["device"] = device
    cfg = load_config(config, overrides)
    summary = train_model(cfg, data_dir, item_info, out, resume=resume)
    click.echo(json.dumps({k: summary[k] for k in ("best_valid_auc", "best_epoch", "params", "samples_per_s")}))
    if runs.is_main_process():
        runs.after_train(out, data_dir, item_info, time.perf_counter() - t0, results)


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="a trained run folder")
@click.option("--data-dir", required=True, type=click.Path())
@click.option("--track", default="task1_2", show_default=True, help="task1 | task2 | task1_2: names the score column")
@click.option("--out", type=click.Path(dir_okay=False), help=f"default: RUN/{C.SUBMISSION_FILE}")
@click.option("--device", help="auto | cpu | cuda | cuda:N")
def predict(run_dir, data_dir, track, out, device):
    """Write prediction.csv (ID = test row order) with the run's best checkpoint."""
    ledger.install("task2 predict")
    from .predict import predict_run

    entry = predict_run(run_dir, data_dir, track, out, device)
    click.echo(json.dumps({k: v for k, v in entry.items() if k != ledger.LEDGER}))


def entry() -> None:
    """Console-script entry point."""
    run(main)

"""`python -m mmctr`: make sample data, validate a data directory, compare runs."""
from __future__ import annotations

import json
import sys

import click
from tqdm import tqdm

from .errors import KitError


def run(group: click.Group) -> None:
    """Run a click CLI, turning KitError into a one-line message and exit status 2."""
    try:
        group(standalone_mode=False)
    except KitError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


@click.group(help=__doc__)
def main() -> None:
    pass


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="data root to write")
@click.option("--size", type=click.Choice(["small", "full"]), default="small", show_default=True,
              help="small: the demo (minutes on 2 CPU cores); full: the challenge's sizes")
@click.option("--items", type=int, help="number of items (overrides --size)")
@click.option("--users", type=int)
@click.option("--train", "n_train", type=int)
@click.option("--valid", "n_valid", type=int)
@click.option("--test", "n_test", type=int)
@click.option("--image-size", type=int)
@click.option("--seed", type=int)
@click.option("--workers", type=int)
def sample(out, size, items, users, n_train, n_valid, n_test, image_size, seed, workers):
    """Write a MicroLens-shaped sample with a planted click signal."""
    from .sample import SampleConfig, generate

    over = {k: v for k, v in dict(n_items=items, n_users=users, n_train=n_train, n_valid=n_valid,
                                 n_test=n_test, image_size=image_size, seed=seed,
                                 workers=workers).items() if v is not None}
    for k, v in over.items():
        if k != "seed" and v <= 0:
            raise KitError(f"--{k.removeprefix('n_').replace('_', '-')} must be positive, got {v}")
    cfg = SampleConfig.full(**over) if size == "full" else SampleConfig(**over)
    summary = generate(out, cfg, progress=lambda it, **kw: tqdm(it, **kw))
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))


@main.command()
@click.option("--data-dir", required=True, type=click.Path(), help="organisers' data root")
@click.option("--no-images", is_flag=True, help="skip the cover image check")
def validate(data_dir, no_images):
    """Check every file against the data contract; exit 1 listing each violation."""
    from .validate import validate as run_validate

    problems = run_validate(data_dir, images=not no_images)
    for p in problems:
        click.echo(str(p), err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {data_dir}", err=True)
        sys.exit(1)
    click.echo(f"ok: {data_dir} follows the data contract")


@main.command("runs")
@click.option("--runs-root", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="folder holding results.csv")
@click.option("--track", help="only this track (task1 | task2 | task1_2)")
@click.option("--model", help="only this model (din, transformer_dcn, ...)")
@click.option("--csv", "as_csv", is_flag=True, help="print the rows as CSV instead of a table")
def runs_table(runs_root, track, model, as_csv):
    """Print results.csv, one row per train / evaluate / tune run, best per track first."""
    from . import runs

    rows = runs.read_results(runs_root, track=track, model=model)
    if not rows:
        raise KitError(f"{runs_root}/{runs.RESULTS_NAME} has no row"
                       + (f" for track={track}" if track else "") + (f" model={model}" if model else ""))
    if as_csv:
        import csv

        w = csv.DictWriter(sys.stdout, fieldnames=runs.COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(runs.ranked(rows))
    else:
        click.echo(runs.format_table(rows))


@main.command()
@click.option("--runs-root", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="default: RUNS_ROOT/report.png")
@click.option("--track")
@click.option("--model")
def report(runs_root, out, track, model):
    """Draw every run of results.csv side by side (best valid AUC, AUC per epoch) into a PNG."""
    from .plots import plot_results

    click.echo(f"ok: {plot_results(runs_root, out, track=track, model=model)}")


@main.command()
@click.option("--runs", "runs_dir", required=True, type=click.Path(file_okay=False),
              help="a track folder (holds task1/ and task2/)")
@click.option("--data-dir", required=True, type=click.Path())
@click.option("--zip", "zip_path", type=click.Path(dir_okay=False), help="the packed submission zip")
@click.option("--track", default="task1_2", show_default=True)
@click.option("--steps", type=click.Path(dir_okay=False), help="'step seconds' lines (the Makefile writes them)")
def summary(runs_dir, data_dir, zip_path, track, steps):
    """Summarise a finished track: valid AUC, sample test AUC vs the oracles, times, files."""
    from .runs import summary_block

    click.echo(summary_block(runs_dir, data_dir, zip_path, track, steps))


def entry() -> None:
    """Console-script entry point."""
    run(main)

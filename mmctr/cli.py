"""`python -m mmctr`: make sample data, validate a data directory."""
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


def entry() -> None:
    """Console-script entry point."""
    run(main)

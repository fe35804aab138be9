"""`python -m mmctr`: make sample data, validate a data directory, compare runs."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import click
from tqdm import tqdm

from .errors import KitError


NO_ARGS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2
ENV_ERRORS = (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
              FileExistsError)
OS_WHY = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
          errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
          errno.EPERM: "operation not permitted", errno.ENOENT: "no such file or directory",
          errno.EISDIR: "is a folder, not a file", errno.ENOTDIR: "not a folder",
          errno.EEXIST: "already exists", errno.EMFILE: "too many open files"}


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {_one_line(message)}", err=True)
    sys.exit(code)


def _os_message(exc: OSError) -> str:
    why = OS_WHY.get(exc.errno) or exc.strerror or str(exc)
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    return f"{why}: {' -> '.join(map(str, paths))}" if paths else why


def write_traceback_log(exc: BaseException) -> Path:
    """Write the traceback of `exc` (with argv) to $MMCTR_LOG_DIR or the temp dir; return the path."""
    folder = Path(os.environ.get("MMCTR_LOG_DIR") or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"mmctr-error-{stamp}-", suffix=".log", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(f"argv: {sys.argv!r}\npython: {sys.version.split()[0]}\n\n")
        f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return Path(name)


def _unexpected(exc: BaseException) -> None:
    head = f"unexpected {type(exc).__name__}: {_one_line(exc) or '(no message)'}"
    if os.environ.get("MMCTR_DEBUG", "") not in ("", "0"):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        _fail(head)
    try:
        log = write_traceback_log(exc)
    except OSError as log_exc:
        _fail(f"{head} (the traceback could not be written: {_os_message(log_exc)}; "
              "rerun with MMCTR_DEBUG=1 to see it)")
    _fail(f"{head} (traceback in {log}; MMCTR_DEBUG=1 shows it inline)")


def run(group: click.Command, args=None) -> None:
    """Run a click CLI; every failure ends as ONE `error: ...` line on stderr and exit status 2.

    KitError and click usage errors print their message; common environment errors
    (permissions, missing paths, a full disk, memory) name the path or the cause; anything
    unexpected prints its type and message plus the path of a log holding the traceback
    (MMCTR_DEBUG=1 prints the traceback inline instead). Ctrl-C exits 130.
    """
    try:
        rv = group.main(args=args, standalone_mode=False)
    except KitError as exc:
        _fail(str(exc))
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("aborted", err=True)
        sys.exit(130)
    except NO_ARGS_HELP as exc:  # a bare `python -m mmctr`: its help, not an error
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message())
        sys.exit(0)
    except click.UsageError as exc:
        hint = f" (try '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(exc.format_message() + hint)
    except click.ClickException as exc:
        _fail(exc.format_message())
    except BrokenPipeError:  # `mmctr validate ... | head`: the reader left; nothing to report
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except ENV_ERRORS as exc:
        _fail(_os_message(exc))
    except MemoryError:
        _fail("out of memory: the data or a setting (batch size, dimensions) needs more RAM than "
              "this machine has; use smaller settings or a larger machine")
    except OSError as exc:
        if exc.errno in OS_WHY:
            _fail(_os_message(exc))
        _unexpected(exc)
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into one line + a log
        _unexpected(exc)
    if isinstance(rv, int) and rv != 0:  # click's Exit(code), e.g. from ctx.exit(1)
        sys.exit(rv)


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
@click.option("--shape", type=click.Choice(["sampled", "bernoulli"]), default="sampled", show_default=True,
              help="sampled: each click with 3 sampled non-clicks (the organisers' way); "
                   "bernoulli: the kit's first sample, one Bernoulli click per row")
@click.option("--negatives", type=click.Choice(["uniform", "popularity"]), default="uniform", show_default=True,
              help="sampled shape: non-clicks drawn uniformly or by popularity**--pop-alpha among unseen items")
@click.option("--pop-alpha", type=float, default=1.0, show_default=True)
def sample(out, size, items, users, n_train, n_valid, n_test, image_size, seed, workers, shape, negatives,
           pop_alpha):
    """Write a MicroLens-shaped sample with a planted click signal."""
    from .io import check_writable
    from .sample import SampleConfig, generate, refuse_overwrite

    over = {k: v for k, v in dict(n_items=items, n_users=users, n_train=n_train, n_valid=n_valid,
                                 n_test=n_test, image_size=image_size, seed=seed,
                                 workers=workers).items() if v is not None}
    for k, v in over.items():
        if k != "seed" and v <= 0:
            raise KitError(f"--{k.removeprefix('n_').replace('_', '-')} must be positive, got {v}")
    over.update(shape=shape, negatives=negatives, pop_alpha=pop_alpha)
    cfg = SampleConfig.full(**over) if size == "full" else SampleConfig(**over)
    refuse_overwrite(out)
    check_writable(out, "--out")
    summary = generate(out, cfg, progress=lambda it, **kw: tqdm(it, **kw))
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))


@main.command()
@click.option("--data-dir", required=True, type=click.Path(), help="organisers' data root")
@click.option("--no-images", is_flag=True, help="skip the cover image check")
@click.option("--decode-covers", is_flag=True,
              help="decode every cover (slower) instead of checking header, size and completeness")
def validate(data_dir, no_images, decode_covers):
    """Check every file against the data contract; exit 1 listing each violation. Read-only."""
    from .validate import validate as run_validate

    bar = (lambda it, **kw: tqdm(it, **kw)) if sys.stderr.isatty() else None
    problems = run_validate(data_dir, images=not no_images, decode_covers=decode_covers, progress=bar)
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
        w.writerows({c: runs.csv_safe(v) for c, v in r.items()} for r in runs.ranked(rows))
    else:
        click.echo(runs.format_table(rows))


@main.command()
@click.option("--runs-root", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="default: RUNS_ROOT/report.png")
@click.option("--track")
@click.option("--model")
def report(runs_root, out, track, model):
    """Draw every run of results.csv side by side (best valid AUC, AUC per epoch) into a PNG."""
    from .paths import refuse_data_like
    from .plots import plot_results

    if out:
        refuse_data_like(out)
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

"""`python -m submission`: check the challenge rules, pack the zip, export the notebook.

Exit status: 0 ok; 1 `check` found broken rules; 2 bad input (one line: `error: ...`).
"""
from __future__ import annotations

import json
import sys

import click

from mmctr.cli import run
from mmctr.tracks import TRACKS, get_track

TRACK = click.option("--track", required=True, type=click.Choice(list(TRACKS)),
                     help="task1 (column Task1), task2 (Task2) or task1_2 (Task1&2)")
RUNS = click.option("--runs", required=True, type=click.Path(), help="run directory (holds task1/ and task2/)")
CODE = click.option("--code", "code_dirs", multiple=True, type=click.Path(),
                    help="more code to scan for tree libraries (repeatable); every git-tracked .py/.ipynb "
                         "of the repo is scanned regardless, and the report records this option")
TASK2_CODE = click.option("--task2-code", multiple=True, type=click.Path(),
                          help="more CTR model code to scan for pretrained models too (repeatable; the kit's "
                               "task2/ is scanned regardless)")
DATA = click.option("--data-dir", required=True, type=click.Path(), help="organisers' data root")
ALLOW = click.option("--allow-input", "allow_inputs", multiple=True, metavar="FILE[=HOW]",
                     help="an input no kit command made (e.g. a precomputed feature file): accepted, and named "
                          "with its sha256 and HOW it was made in the report and REPRODUCE.md (repeatable)")


@click.group(help=__doc__)
def main() -> None:
    pass


@main.command()
@TRACK
@RUNS
@DATA
@CODE
@TASK2_CODE
@click.option("--din-config", type=click.Path(),
              help="ignored (recorded as a warning): the fixed DIN's values are frozen in mmctr/tracks.py")
@ALLOW
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def check(track, runs, data_dir, code_dirs, task2_code, din_config, allow_inputs, as_json):
    """Check the challenge rules on a run; exit 1 listing every broken rule."""
    from .rules import check as run_check

    report = run_check(get_track(track), runs, data_dir, code_dirs=list(code_dirs) or None,
                       task2_code=list(task2_code) or None, din_config=din_config, allow_inputs=allow_inputs)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            click.echo(line, err=not report.ok and line.startswith(("FAIL", "warn")))
    if not report.ok:
        sys.exit(1)


@main.command()
@TRACK
@RUNS
@DATA
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="submission zip to write")
@click.option("--prediction", type=click.Path(dir_okay=False),
              help="prediction.csv to pack; must be byte-identical to RUNS/task2/prediction.csv (the default)")
@CODE
@TASK2_CODE
@ALLOW
def pack(track, runs, data_dir, out, prediction, code_dirs, task2_code, allow_inputs):
    """Check the rules, then write the zip (the checked prediction, rewritten canonically) and the
    reproducibility bundle, both or neither."""
    from .pack import pack as run_pack

    s = run_pack(get_track(track), runs, data_dir, out, prediction=prediction,
                 code_dirs=list(code_dirs) or None, task2_code=list(task2_code) or None, allow_inputs=allow_inputs)
    b = s["repro_bundle"]
    click.echo(f"ok: {s['zip']} ({s['rows']} rows, column {s['column']}, sha256 {s['zip_sha256'][:12]})")
    click.echo(f"repro bundle: {b['path']} ({b['files']} files, git {(b['git']['commit'] or 'unknown')[:12]}"
               + (", uncommitted changes included" if b["git"]["dirty"] else "") + ")")
    if b["left_out"]:
        click.echo("left out of the bundle: " + ", ".join(f"{n} ({why})" for n, why in sorted(b["left_out"].items())),
                   err=True)


@main.command()
@TRACK
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="notebook to write (.ipynb)")
@click.option("--data", default="data/sample", show_default=True, help="DATA the notebook starts with")
@click.option("--no-embed", is_flag=True, help="use an existing checkout instead of embedding the code")
def notebook(track, out, data, no_embed):
    """Export a self-contained notebook that runs the track end to end."""
    from mmctr.paths import refuse_data_like

    from .notebook import write

    refuse_data_like(out)
    path = write(track, out, data=data, embed=not no_embed)
    click.echo(f"ok: {path}")


@main.command()
@click.option("--zip", "zip_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data-dir", required=True, type=click.Path(), help="a sample data root (has the test labels)")
@click.option("--track", type=click.Choice(list(TRACKS)), help="score this track's column (default: the one present)")
def score(zip_path, data_dir, track):
    """Score a zip against the sample's test labels, as the organisers' scorer would."""
    from mmctr.errors import KitError
    from mmctr.paths import DataPaths
    from mmctr.sample import read_truth

    from .prediction import score as run_score

    root = DataPaths.resolve(data_dir).root
    try:
        _, labels = read_truth(root, "test")
    except (OSError, KeyError) as exc:
        raise KitError(f"{root} has no sample test labels (only generated samples do): {exc}") from None
    click.echo(f"AUC {run_score(zip_path, labels, track):.6f}")


@main.command()
@click.argument("bundle", type=click.Path(dir_okay=False))
@DATA
@click.option("--track", type=click.Choice(list(TRACKS)), help="the bundle's track (default: from run/submission.json)")
@click.option("--tol", type=float, default=None, help="max |new - shipped| allowed (default 1e-3)")
@click.option("--timeout", type=float, default=None,
              help="seconds allowed for run.sh; then it is stopped with every process it started")
@click.option("--zip", "zip_path", type=click.Path(exists=True, dir_okay=False),
              help="the submission zip uploaded to Codabench: the re-run must agree with it too")
@click.option("--sandbox", type=click.Choice(["bwrap", "unshare", "none"]), default=None,
              help="default: the strongest available (bwrap: read-only file system, no network)")
def reproduce(bundle, data_dir, track, tol, timeout, zip_path, sandbox):
    """Re-run a repro bundle in a sandbox; exit 1 unless it trained afresh and its prediction agrees
    with the bundle's (and the uploaded zip's) within --tol."""
    import zipfile

    from mmctr.errors import KitError

    from .reproduce import REPRODUCE_TOL, reproduce as run_reproduce

    if track is None:
        try:
            with zipfile.ZipFile(bundle) as zf:
                track = json.loads(zf.read("run/submission.json"))["track"]
        except (OSError, KeyError, ValueError, RuntimeError, zipfile.BadZipFile) as exc:
            raise KitError(f"{bundle}: cannot read run/submission.json for the track ({exc}); pass --track") from None
    res = run_reproduce(bundle, data_dir, get_track(track), tol=REPRODUCE_TOL if tol is None else tol,
                        timeout=timeout, zip_path=zip_path, sandbox=sandbox)
    click.echo(f"{'ok' if res['ok'] else 'FAIL'}: {res['rows']} rows, max |diff| {res['max_abs_diff']:.3g} "
               f"(tol {res['tol']:g}), mean |diff| {res['mean_abs_diff']:.3g}, Spearman {res['spearman']:.6f}, "
               f"AUC vs shipped ranking {res['auc_vs_shipped_ranking']:.6f}")
    tr = res["trained"]
    click.echo(f"sandbox {res['sandbox']}; trained afresh: " + (f"yes ({tr['epochs']} epoch(s), timings "
               f"{tr['timings']} vs shipped {tr['shipped_timings']})" if tr["ok"] else "NO: " + "; ".join(tr["why"])))
    if "vs_zip" in res:
        vz = res["vs_zip"]
        click.echo(f"uploaded zip: max |diff| {vz['max_abs_diff']:.3g} from the re-run"
                   + ("" if vz["zip_is_bundle"] else "; its prediction is NOT the bundle's"))
    if res["data_written"]:
        click.echo(f"the run wrote into the data dir (a copy; the data is untouched): "
                   f"{', '.join(res['data_written'][:5])}")
    if res["hidden"]:
        click.echo(f"hidden from the run (copies of the shipped outputs): {', '.join(res['hidden'][:5])}")
    if not res["ok"]:
        sys.exit(1)


def entry() -> None:
    """Console-script entry point (mmctr-submission)."""
    run(main)

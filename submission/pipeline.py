"""The commands that run a track end to end, as the Makefile runs them.

The repro bundle (run.sh, REPRODUCE.md) and the notebook both render these steps, so the
three stay one sequence. The track -> make target / config map is declared on each Track
(mmctr.tracks); tests/test_submission_notebook.py checks that the Makefile agrees.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from mmctr import contract as C
from mmctr.tracks import get_track

from mmctr import rundir as L

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_target(track) -> str:
    """The Makefile target that runs `track` end to end (track1, track2, track12)."""
    return get_track(track).make_target


def config_vars(track) -> dict:
    """{"T1_CONFIG": ..., "T2_CONFIG": ...}: the repo-relative configs the track runs with."""
    t = get_track(track)
    return {"T1_CONFIG": t.t1_config, "T2_CONFIG": t.t2_config}


def t2_config_var(track: str) -> str:
    """The make variable that sets the CTR config of the track (track1 forces DIN_CONFIG)."""
    return "T2_CONFIG" if get_track(track).custom_model else "DIN_CONFIG"


@dataclass(frozen=True)
class Step:
    title: str
    args: tuple  # after `python`; may hold {DATA} {RUNS} {T1_CONFIG} {T2_CONFIG} placeholders


def steps(track: str) -> list:
    """task1 (new-embedding tracks), task2 train + predict, submission check + pack."""
    t = get_track(track)
    out = []
    if t.new_embeddings:
        out.append(Step("Task 1: new 128-D item embeddings -> item_info.parquet",
                        ("-m", "task1", "build", "--data-dir", "{DATA}", "--config", "{T1_CONFIG}",
                         "--out", f"{{RUNS}}/{L.TASK1_DIR}")))
        item_info = f"{{RUNS}}/{L.TASK1_DIR}/{L.TASK1_ITEM_INFO}"
    else:
        item_info = f"{{DATA}}/{C.ITEM_INFO.relpath}"
    out.append(Step("Task 2: train the CTR model",
                    ("-m", "task2", "train", "--data-dir", "{DATA}", "--config", "{T2_CONFIG}",
                     "--out", f"{{RUNS}}/{L.TASK2_DIR}", "--item-info", item_info)))
    out.append(Step("Task 2: predict the test set",
                    ("-m", "task2", "predict", "--run", f"{{RUNS}}/{L.TASK2_DIR}", "--data-dir", "{DATA}",
                     "--track", t.name)))
    out.append(Step("Check the challenge rules",
                    ("-m", "submission", "check", "--track", t.name, "--runs", "{RUNS}", "--data-dir", "{DATA}")))
    out.append(Step("Pack submission.zip (+ the reproducibility bundle)",
                    ("-m", "submission", "pack", "--track", t.name, "--runs", "{RUNS}", "--data-dir", "{DATA}",
                     "--out", "{RUNS}/submission.zip")))
    return out


_PH = re.compile(r"\{([A-Z0-9_]+)\}")


def render_shell(step: Step, python: str = "python") -> str:
    parts = [python]
    for a in step.args:
        if _PH.search(a):
            parts.append('"' + _PH.sub(lambda m: "${" + m.group(1) + "}", a) + '"')
        else:
            parts.append(shlex.quote(a))
    return " ".join(parts)


def render_python(step: Step) -> str:
    """`sh(PY, ...)` with placeholders as Python variables."""
    parts = ["PY"]
    for a in step.args:
        if a in ("{DATA}", "{RUNS}", "{T1_CONFIG}", "{T2_CONFIG}"):
            parts.append(a[1:-1])
        elif _PH.search(a):
            parts.append("f" + repr(a))
        else:
            parts.append(repr(a))
    return f"sh({', '.join(parts)})"

"""The challenge's three tracks (score column, which parts may change) and the fixed Task-1 DIN.

The fixed DIN's values are frozen here, with their sha256, so that the rule check compares a
run against the challenge (challenge.md: "The fixed Task-1 CTR model"), never against a YAML
file or a model default that a participant can edit.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from . import contract as C
from .errors import KitError


@dataclass(frozen=True)
class Track:
    name: str
    column: str  # score column of prediction.csv
    new_embeddings: bool  # item_emb_d128 comes from task1
    custom_model: bool  # the CTR model may differ from the fixed baseline DIN
    make_target: str  # the Makefile target that runs the track end to end
    t2_config: str  # task2 config the track trains with (repo-relative)
    t1_config: str = "task1/configs/default.yaml"


TRACKS = {
    "task1": Track("task1", C.TRACK_COLUMNS["task1"], new_embeddings=True, custom_model=False,
                   make_target="track1", t2_config="task2/configs/din_baseline.yaml"),
    "task2": Track("task2", C.TRACK_COLUMNS["task2"], new_embeddings=False, custom_model=True,
                   make_target="track2", t2_config="task2/configs/transformer_dcn.yaml"),
    "task1_2": Track("task1_2", C.TRACK_COLUMNS["task1_2"], new_embeddings=True, custom_model=True,
                     make_target="track12", t2_config="task2/configs/transformer_dcn.yaml"),
}


@dataclass(frozen=True)
class FixedDIN:
    """The official DIN baseline (FuxiCTR 2.3.7): architecture + training values, frozen."""

    model: str
    net: tuple  # ((key, value), ...): the DIN's own keys
    train: tuple  # ((key, value), ...): how it is fitted
    tunable: tuple  # the keys the Task-1 track may change
    sha256: str  # of the values above (canonical JSON): a guard against edits of this file


def _canonical(model: str, net: dict, train: dict, tunable: tuple) -> str:
    doc = {"model": model, "net": net, "train": train, "tunable": list(tunable)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


_NET = {"embedding_dim": 64, "dnn_hidden_units": [1024, 512, 256], "dnn_activations": "relu",
        "attention_hidden_units": [512, 256], "attention_activation": "relu", "attention_dropout": 0.1,
        "din_use_softmax": False, "batch_norm": True, "net_dropout": 0.1}
_TRAIN = {"learning_rate": 1e-3, "batch_size": 8192, "embedding_regularizer": 1e-6, "net_regularizer": 0.0,
          "max_len": 64, "early_stop_patience": 3, "lr_decay_factor": 0.1, "grad_clip_norm": 10.0,
          "seed": 20242025, "evals_per_epoch": 1}
# Of the fixed DIN, the Task-1 track may change only these (challenge.md: Tracks and rules).
TASK1_TUNABLE = ("embedding_regularizer", "net_regularizer", "net_dropout", "learning_rate", "batch_size")
FIXED_DIN_SHA256 = "91de320788a02be79198214be8c57c398f2d1ca77f2f9e3eb8c9a0e002f74dfa"
FIXED_DIN = FixedDIN("din", tuple(_NET.items()), tuple(_TRAIN.items()), TASK1_TUNABLE, FIXED_DIN_SHA256)
# Architecture of the fixed DIN built by task2's code: sha256 of its module types and of its
# parameter/buffer names and shapes, the item-table dimensions written symbolically (see
# submission.fingerprint). A din.py edit that changes the network changes this hash.
FIXED_DIN_ARCH_SHA256 = "593a2bb0e9a67c6a3fbf04b697c07d67e3b955e9ca20aef4363d440f8e14b06a"
# What the fixed DIN computes: its logits on a fixed synthetic batch with every parameter drawn
# from a fixed generator (submission.fingerprint.forward_fingerprint). An edited forward that keeps
# the modules and shapes changes these; compared with FIXED_DIN_LOGITS_TOL (fp32 noise is ~1e-6).
FIXED_DIN_LOGITS = (0.265183, 0.181523, 0.28361, 0.228118, 0.329184, 0.218816)
FIXED_DIN_LOGITS_TOL = 1e-4


def fixed_din_config() -> dict:
    """{"model", "net", "train"}: fresh copies of the frozen values (after checking their hash)."""
    if _canonical(FIXED_DIN.model, dict(FIXED_DIN.net), dict(FIXED_DIN.train), FIXED_DIN.tunable) != FIXED_DIN.sha256:
        raise KitError("mmctr/tracks.py: the frozen fixed-DIN values do not match their sha256 (edited?)")
    copy = json.loads(json.dumps({"net": dict(FIXED_DIN.net), "train": dict(FIXED_DIN.train)}))
    return {"model": FIXED_DIN.model, **copy}


def get_track(name) -> Track:
    """A Track from its name (task1, task2, task1_2; 'Task1&2' and 'task1-2' too) or a Track."""
    if isinstance(name, Track):
        return name
    key = str(name).lower().replace("&", "_").replace("-", "_")
    if key not in TRACKS:
        raise KitError(f"unknown track '{name}': choose one of {', '.join(TRACKS)}")
    return TRACKS[key]


# The fixed DIN's whole training path: trainer, data pipeline, optimizer and loss (train.py),
# config, model, layers, runtime (seeds, autocast, DDP), run folder and checkpoint code, the
# scoring loop and the metric that picks the best epoch. Hashed
# (mmctr.ledger.source_sha256) so that a Task-1 run trained with edited code, e.g. AdamW instead
# of Adam, or a change under `self.training` that eval-mode fingerprints cannot see, is caught.
# After an intended change of these files, refreeze: `python -m mmctr.tracks --refreeze`.
REFREEZE = "python -m mmctr.tracks --refreeze"
FIXED_DIN_SOURCES = {
    "task2/train.py": "1411ab1288076c22cb3523fe4ca4ef7a515c7ae400a942cd20c2098b1fcb68a8",
    "task2/data.py": "85f3df2d2f5bb9f51194c14a58e021302cd62351b5d5983603ffa5b8df086360",
    "task2/config.py": "b9c127bad480bbb00385ee25e0da8455760fe05220f54a26971ff04da349c174",
    "task2/checkpoint.py": "9b337bdf0abf303a07d1d5bd6d6f5236ad6f3595a263dd22532b663d78fcd162",
    "task2/models/__init__.py": "5dc96572c60fc951f16d0ecdedabe0f27e7d83aa75725b85e807bfae08117838",
    "task2/models/din.py": "fea2812f80ea0592f84c84b666adc938aa71087659b57e2b059d7f2c573550a6",
    "task2/models/layers.py": "7a8979fa6cc45a47f70ec8942bb700ee9955db7d093fc52e7e036fdf030d6be0",
    "mmctr/config.py": "0564ba4fe3335ac29d97bd6993f0ebe7e3bb765ee40e60256ac64af056f00acb",
    "mmctr/runtime.py": "1f41a3cd514b4c92223aefb47ca0ff9e2bdc34c6b1eec3af267a7c38ec2dd08a",
    "mmctr/rundir.py": "60d978b23462592e8f1e8d810b10edf0dd3e3ec7593af8f36b56088cde22f1f2",
    "task2/predict.py": "56110227ca9a50dae64c38bd6604e209ce0b6fe5451c709d702eb7d52aeef1e0",
    "mmctr/metrics.py": "c08fb171e979fdb611a19223314fabadaf3aafc4a15b6c06397b65b754f3930e",
}


def training_path_changes(root=None, recorded: dict | None = None) -> list:
    """[(path, why)] of the training-path files whose sha256 is not the frozen one: in the
    checkout at `root` (default: this kit), or in `recorded` ({path: sha256}, a run's ledger)."""
    from .ledger import KIT_ROOT, source_sha256

    out = []
    for rel, frozen in FIXED_DIN_SOURCES.items():
        if recorded is not None:
            got = recorded.get(rel)
            if got is None:
                out.append((rel, "not recorded as loaded by the run"))
            elif got != frozen:
                out.append((rel, f"sha256 {got[:12]}, frozen {frozen[:12]}"))
            continue
        path = (KIT_ROOT if root is None else root) / rel
        try:
            got = source_sha256(path)
        except OSError:
            out.append((rel, "missing"))
            continue
        if got != frozen:
            out.append((rel, f"sha256 {got[:12]}, frozen {frozen[:12]}"))
    return out


def refreeze() -> dict:
    """Rewrite FIXED_DIN_SOURCES in this file with the checkout's hashes; return them."""
    import re
    from pathlib import Path

    from .ledger import KIT_ROOT, source_sha256

    hashes = {rel: source_sha256(KIT_ROOT / rel) for rel in FIXED_DIN_SOURCES}
    body = "".join(f'    "{rel}": "{sha}",\n' for rel, sha in hashes.items())
    me = Path(__file__)
    text = re.sub(r"FIXED_DIN_SOURCES = \{\n.*?\n?\}", "FIXED_DIN_SOURCES = {\n" + body + "}", me.read_text(),
                  count=1, flags=re.S)
    tmp = me.with_suffix(".py.tmp")
    tmp.write_text(text)
    tmp.replace(me)
    return hashes


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--refreeze"]:
        sys.exit(f"usage: {REFREEZE}")
    for rel, sha in refreeze().items():
        print(f"{sha}  {rel}")

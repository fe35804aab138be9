"""`--engine fuxictr`: the organisers' DIN itself, FuxiCTR 2.3.7, in its own environment.

The kit writes a FuxiCTR config folder (dataset_config.yaml + model_config.yaml, the layout of
the organisers' WWW2025_MMCTR_Challenge repo) from the kit's fixed-DIN config, then runs
task1/fuxictr_runner.py under the FuxiCTR interpreter (`make fuxictr-env`) by subprocess and
reads back its per-epoch history. FuxiCTR's feature map and checkpoints go to the run folder,
never to the data dir.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import yaml

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.item_info import read_item_info
from mmctr.paths import DataPaths

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).with_name("fuxictr_runner.py")
VENV = ROOT / ".venv-fuxictr"
PYTHON_ENV = "MMCTR_FUXICTR_PYTHON"  # another interpreter that has fuxictr 2.3.7
FUXICTR_VERSION = "2.3.7"
EXPID = "DIN_kit"
DATASET_ID = "MicroLens_1M_x1"
RESULT = "fuxictr_result.json"
# What FuxiCTR 2.3.7 does and cannot be told otherwise (rank_model.py: lr_decay(), fit()).
FIXED = {"lr_decay_factor": 0.1, "evals_per_epoch": 1}
HISTORY_KEYS = frozenset({"epoch", "train_loss", "valid_auc", "valid_logloss", "lr", "train_seconds", "samples_per_s"})
_EMB = "embedding_layer.embedding_layer."
# kit parameter name -> FuxiCTR's (the organisers' src/DIN.py module names on FuxiCTR 2.3.7 layers)
KIT_NAMES = {
    "items.id_emb.weight": _EMB + "embedding_layers.item_id.weight",
    "items.tag_emb.weight": _EMB + "embedding_layers.item_tags.weight",
    "items.mm_proj.weight": _EMB + "feature_encoders.item_emb_d128.weight",
    "likes.weight": _EMB + "embedding_layers.likes_level.weight",
    "views.weight": _EMB + "embedding_layers.views_level.weight",
}
KIT_PATTERNS = [(re.compile(r"attention\.score\.(\d+)\.(\w+)$"), r"attention_layers.attention_layer.mlp.\1.\2"),
                (re.compile(r"dnn\.(\d+)\.(\w+)$"), r"dnn.mlp.\1.\2")]


def mapped_name(kit_name: str, names: dict, patterns: list, what: str) -> str:
    """kit_name looked up in `names`, else rewritten by the first matching (regex, replacement) of
    `patterns`; one KitError "no {what} {kit_name}" otherwise."""
    if kit_name in names:
        return names[kit_name]
    for pattern, repl in patterns:
        if pattern.match(kit_name):
            return pattern.sub(repl, kit_name)
    raise KitError(f"no {what} {kit_name}")


def fuxictr_name(kit_name: str) -> str:
    """The FuxiCTR state-dict name of a kit DIN parameter or buffer."""
    return mapped_name(kit_name, KIT_NAMES, KIT_PATTERNS, "FuxiCTR name for kit DIN parameter")


def dnn_columns(item_dim: int, emb_dim: int) -> np.ndarray:
    """FuxiCTR's DNN input is [likes, views, target, pooled], the kit's [target, pooled, likes, views]:
    column j of FuxiCTR's first DNN layer is column perm[j] of the kit's."""
    kit = np.arange(2 * item_dim + 2 * emb_dim)
    target, pooled = kit[:item_dim], kit[item_dim:2 * item_dim]
    likes, views = kit[2 * item_dim:2 * item_dim + emb_dim], kit[2 * item_dim + emb_dim:]
    return np.concatenate([likes, views, target, pooled])


def to_fuxictr(name: str, value: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """A kit tensor (as numpy) laid out as FuxiCTR holds it."""
    return value[:, perm] if name == "dnn.0.weight" else value


def kit_state_to_fuxictr(model, emb_dim: int) -> dict:
    """The kit DIN's state dict under FuxiCTR names and layout (numpy), for load_state_dict there."""
    perm = dnn_columns(model.items.out_dim, emb_dim)
    return {fuxictr_name(k): to_fuxictr(k, v.detach().cpu().numpy(), perm) for k, v in model.state_dict().items()}


def fuxictr_python() -> Path:
    """The interpreter of the FuxiCTR environment: $MMCTR_FUXICTR_PYTHON or .venv-fuxictr."""
    named = os.environ.get(PYTHON_ENV)
    py = Path(named) if named else VENV / "bin" / "python"
    if not py.is_file():
        where = f"{PYTHON_ENV}={named}" if named else str(VENV)
        raise KitError(f"no FuxiCTR 2.3.7 environment at {where}: run `make fuxictr-env`")
    return py


def _float(x) -> float:
    # FuxiCTR applies a regulariser only when it is a float (torch_utils.get_regularizer)
    return float(x)


def flat_config(cfg) -> dict:
    """The flat key -> value mapping of a task2 config (a RunConfig or an already flat dict)."""
    return cfg.to_flat() if hasattr(cfg, "to_flat") else dict(cfg)


def feature_cols(n_items: int, n_tags: int) -> list[dict]:
    """FuxiCTR's feature_cols of the organisers' data (their dataset_config.yaml): ids as given."""
    return [
        {"name": "user_id", "active": True, "dtype": "int", "type": "meta"},
        {"name": "item_seq", "active": True, "dtype": "int", "type": "meta"},
        {"name": "likes_level", "active": True, "dtype": "int", "type": "categorical", "vocab_size": C.LEVEL_MAX + 1},
        {"name": "views_level", "active": True, "dtype": "int", "type": "categorical", "vocab_size": C.LEVEL_MAX + 1},
        {"name": "item_id", "active": True, "dtype": "int", "type": "categorical", "vocab_size": n_items + 1,
         "source": "item"},
        {"name": "item_tags", "active": True, "dtype": "int", "type": "sequence", "max_len": C.TAGS_LEN,
         "vocab_size": n_tags, "source": "item"},
        {"name": "item_emb_d128", "active": True, "dtype": "float", "type": "embedding", "source": "item",
         "embedding_dim": C.EMB_DIM},
    ]


def fuxictr_config(cfg: dict, train, valid, item_info, n_items: int, n_tags: int, work_dir,
                   max_epochs: int, device: str = "cpu", num_threads: int = 0) -> tuple[dict, dict]:
    """(dataset_config, model_config) for FuxiCTR from the kit's DIN config `cfg`."""
    cfg = flat_config(cfg)
    if cfg.get("model") != "din":
        raise KitError(f"the fuxictr engine runs only the fixed DIN, not model '{cfg.get('model')}'")
    for key, value in FIXED.items():
        if cfg.get(key, value) != value:
            raise KitError(f"the fuxictr engine cannot run {key}={cfg[key]!r}: FuxiCTR 2.3.7 fixes it at {value}")
    for key in ("dnn_activations", "attention_activation"):
        if str(cfg[key]).lower() != "relu":
            raise KitError(f"{key}: the fixed DIN uses relu, got {cfg[key]!r}")
    work = Path(work_dir).resolve()
    dataset = {DATASET_ID: {
        "data_root": str(work / "data"),
        "data_format": "parquet",
        "train_data": str(Path(train).resolve()),
        "valid_data": str(Path(valid).resolve()),
        "test_data": None,
        "item_info": str(Path(item_info).resolve()),
        "rebuild_dataset": False,
        "feature_cols": feature_cols(n_items, n_tags),
        "label_col": {"name": "label", "dtype": "float"},
    }}
    gpu = -1 if device == "cpu" else int(device.split(":")[1]) if ":" in device else 0
    model = {
        "Base": {"model_root": str(work / "checkpoints"), "num_workers": 0, "verbose": 0,
                 "early_stop_patience": cfg["early_stop_patience"], "pickle_feature_encoder": False,
                 "save_best_only": True, "eval_steps": None, "debug_mode": False, "group_id": None,
                 "use_features": None, "feature_specs": None, "feature_config": None},
        EXPID: {
            "model": "DIN", "dataset_id": DATASET_ID, "loss": "binary_crossentropy",
            "metrics": ["AUC", "logloss"], "task": "binary_classification", "optimizer": "adam",
            "learning_rate": _float(cfg["learning_rate"]),
            "embedding_regularizer": _float(cfg["embedding_regularizer"]),
            "net_regularizer": _float(cfg["net_regularizer"]),
            "batch_size": int(cfg["batch_size"]),
            "embedding_dim": int(cfg["embedding_dim"]),
            "dnn_hidden_units": [int(u) for u in cfg["dnn_hidden_units"]],
            "dnn_activations": "ReLU",
            "attention_hidden_units": [int(u) for u in cfg["attention_hidden_units"]],
            "attention_hidden_activations": "ReLU",
            "attention_output_activation": None,
            "attention_dropout": _float(cfg["attention_dropout"]),
            "din_use_softmax": bool(cfg["din_use_softmax"]),
            "net_dropout": _float(cfg["net_dropout"]),
            "batch_norm": bool(cfg["batch_norm"]),
            "epochs": int(max_epochs), "shuffle": True, "seed": int(cfg["seed"]),
            "monitor": "AUC", "monitor_mode": "max", "max_len": int(cfg["max_len"]),
            "accumulation_steps": 1, "max_gradient_norm": _float(cfg["grad_clip_norm"]),
            "gpu": gpu, "num_threads": int(num_threads or 0),
        },
    }
    return dataset, model


def write_fuxictr_config(config_dir, dataset: dict, model: dict) -> Path:
    config_dir = Path(config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    for name, body in (("dataset_config.yaml", dataset), ("model_config.yaml", model)):
        (config_dir / name).write_text(yaml.safe_dump(body, sort_keys=False))
    return config_dir


def run_runner(command: str, config_dir, out, extra=(), quiet: bool = False, timeout: float | None = None):
    """Run fuxictr_runner.py COMMAND in the FuxiCTR environment; one KitError on failure."""
    # -I: neither task1/ (the script's folder: config.py, cache.py...) nor PYTHON* variables
    # can shadow a module that FuxiCTR, torch or pandas import
    args = [str(fuxictr_python()), "-I", str(RUNNER), command, "--config-dir", str(config_dir),
            "--expid", EXPID, "--out", str(out), *map(str, extra)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(args, env=env, cwd=str(Path(config_dir).resolve()), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if not quiet and proc.stdout:
        print(proc.stdout, end="")
    if proc.returncode:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if ln.startswith("error: ")), lines[-1] if lines else "")
        raise KitError(f"FuxiCTR {command} failed (exit {proc.returncode}): {last.removeprefix('error: ')}")
    return proc


def train_fuxictr(cfg: dict, data_dir, item_info_path, out_dir, device=None, max_epochs: int | None = None,
                  quiet: bool = False, init_weights=None, order=None) -> dict:
    """Train the organisers' DIN (FuxiCTR 2.3.7) on train.parquet, validate each epoch.

    Lockstep with another engine: `init_weights` (.npz, FuxiCTR names: kit_state_to_fuxictr)
    replaces FuxiCTR's initialisation, `order` (.npy, (epochs, rows)) replaces its shuffling.

    Returns the shape task2.train.train_model returns: best_valid_auc, best_epoch, history
    (epoch, train_loss, valid_auc, valid_logloss, lr, train_seconds, samples_per_s), params,
    samples_per_s; plus engine and fuxictr_version.
    """
    from task2.data import load_split

    cfg = flat_config(cfg)
    paths = DataPaths.resolve(data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    py = fuxictr_python()  # fail before any work
    tags, emb = read_item_info(item_info_path)
    n_items = len(emb) - 1
    train, valid = paths.require(C.TRAIN), paths.require(C.VALID)
    for split in (train, valid):  # the kit's one-line checks of ids, levels and labels
        load_split(split, cfg["max_len"], n_items, need_label=True)
    device = device or cfg.get("device", "cpu")
    if device == "auto":
        device = "cpu"  # FuxiCTR's torch may differ from the kit's; ask for cuda explicitly
    epochs = max_epochs or cfg["max_epochs"]
    dataset, model = fuxictr_config(cfg, train, valid, item_info_path, n_items, int(tags.max()) + 1,
                                    out / "fuxictr", epochs, device, cfg.get("num_threads") or 0)
    config_dir = write_fuxictr_config(out / "fuxictr" / "config", dataset, model)
    result_path = out / RESULT
    result_path.unlink(missing_ok=True)
    # fit() ends by reloading its best checkpoint: never one left by an earlier run in this folder
    (Path(model["Base"]["model_root"]) / DATASET_ID / f"{EXPID}.model").unlink(missing_ok=True)
    if not quiet:
        print(f"FuxiCTR {FUXICTR_VERSION} DIN ({py}), up to {epochs} epoch(s)")
    extra = [*(["--init-weights", Path(init_weights).resolve()] if init_weights else []),
             *(["--order", Path(order).resolve()] if order else [])]
    run_runner("train", config_dir, result_path.resolve(), extra=extra, quiet=quiet)
    try:
        res = json.loads(result_path.read_text())
    except (OSError, ValueError) as exc:
        raise KitError(f"FuxiCTR run wrote no readable {result_path}: {exc}") from None
    hist = res.get("history") if isinstance(res, dict) else None
    if not hist or not all(isinstance(h, dict) and HISTORY_KEYS <= set(h) for h in hist) \
            or not all(isinstance(h["valid_auc"], (int, float)) and math.isfinite(h["valid_auc"]) for h in hist) \
            or not isinstance(res.get("best_valid_auc"), (int, float)) or not math.isfinite(res["best_valid_auc"]):
        raise KitError(f"{result_path}: FuxiCTR gave no finite per-epoch valid AUC "
                       f"(history needs {', '.join(sorted(HISTORY_KEYS))})")
    if not quiet:
        for h in hist:
            print(f"epoch {h['epoch']}: loss {h['train_loss']:.4f} valid AUC {h['valid_auc']:.5f} "
                  f"logloss {h['valid_logloss']:.4f} ({h['samples_per_s']:,.0f} samples/s)")
    return res

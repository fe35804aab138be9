"""The run-time ledger's cost: the same kit step with mmctr.ledger's audit hook on and off.

    python bench/bench_ledger.py --repeats 5
Each variant is a fresh interpreter that installs the ledger as a kit command does and takes a
snapshot at the end; "off" is the same program with sys.addaudithook made a no-op before the
ledger installs, so all the ledger's other work (sys.modules copy, snapshot, source hashes) is in
both. Steps: `events` (a tight loop of the events a train step raises most: CPU per event),
`import` (what task2 train imports) and `train` (`task2 train`, 1 epoch of a small DIN
on a generated tiny sample). Variants alternate, so the machine's load falls on both alike; the
figures are medians of child CPU time (user + sys) and wall time, and the on/off ratio.
Then the events one train step raises, by name, and the hook's own time per event (in this
process), so the ratio can be read against events x time per event.
Not a test: prints figures. Runs on whatever cores it gets; say how many when you quote it.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY_DIN = ["--config", "din_baseline", "--max-epochs", "1", "--device", "cpu", "--set", "num_threads=1",
            "--set", "batch_size=1024", "--set", "embedding_dim=8", "--set", "dnn_hidden_units=[16]",
            "--set", "attention_hidden_units=[16]"]
EVENTS_N = 100_000  # iterations of the events loop: 3 events each (2 builtins.id, 1 open)
OFF = "import sys\nsys.addaudithook = lambda hook: None\n"
COUNT = ("import collections, atexit, json, sys\n_n = collections.Counter()\n"
         "sys.addaudithook(lambda event, args: _n.update((event,)))\n"
         "atexit.register(lambda: sys.stderr.write('EVENTS' + json.dumps(_n.most_common())))\n")


def program(step: str, prelude: str, args: list) -> str:
    if step == "events":  # the events a train step raises most, in a tight loop: cost per event
        body = ("from mmctr import ledger\nledger.install('task2 train')\nimport time\nt0 = time.process_time()\n"
                f"for _ in range({EVENTS_N}):\n    id(0); id(1); open(__import__('os').devnull).close()\n"
                "import sys\nsys.stderr.write('LOOP%.6f' % (time.process_time() - t0))\nledger.snapshot()\n")
    elif step == "import":
        body = ("from mmctr import ledger\nledger.install('task2 train')\nimport task2.train, task2.predict\n"
                "import sklearn.metrics\nledger.snapshot()\n")
    else:  # the kit command itself, as `python -m task2 train ...` runs it
        body = (f"import runpy, sys\nsys.argv = ['task2', 'train', *{args!r}]\n"
                "try:\n    runpy.run_module('task2', run_name='__main__', alter_sys=True)\n"
                "except SystemExit as e:\n    assert not e.code, e.code\n")
    return prelude + body


def timed(code: str, cwd: Path) -> tuple[float, float, str]:
    """(child CPU seconds, wall seconds, stderr) of one fresh interpreter running `code`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MMCTR_RUNS_ROOT", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise SystemExit(f"the benchmarked program failed: {p.stderr[-2000:]}")
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall, p.stderr


def hook_seconds_per_event(events: list) -> dict:
    """The ledger hook's own time per call, for each of these (event, args) in this process."""
    from mmctr import ledger

    ledger.install("bench")
    out = {}
    for event, args in events:
        n = 20000
        t0 = time.perf_counter()
        try:
            for _ in range(n):
                ledger._hook(event, args)
        except Exception:  # an event whose arguments this table does not know: not timed
            continue
        out[event] = (time.perf_counter() - t0) / n
    return out


SAMPLE_ARGS = {"open": ("/x/y.py", "r", 0), "builtins.id": (1,), "os.listdir": (".",), "sys._getframe": (None,),
               "marshal.loads": (b"",), "exec": ((lambda: 0).__code__,), "object.__setattr__": (int, "x", 1),
               "import": ("a_module_that_is_not_there", None, [], [], []),
               "compile": (b"x = 1", "/x/y.py")}


@click.command()
@click.option("--repeats", default=3, show_default=True, help="runs of each variant per step")
@click.option("--steps", default="events,import,train", show_default=True)
def main(repeats, steps):
    from mmctr.sample import SampleConfig, generate

    work = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    data = work / "data"
    generate(data, SampleConfig(n_items=300, n_users=500, n_train=4000, n_valid=800, n_test=900, image_size=32,
                                workers=1))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    for step in steps.split(","):
        runs = {"on": [], "off": []}
        for i in range(repeats):
            for variant in ("on", "off") if i % 2 == 0 else ("off", "on"):
                args = ["--data-dir", str(data), "--out", str(work / f"run-{variant}-{i}"), *TINY_DIN]
                cpu, wall, err = timed(program(step, "" if variant == "on" else OFF, args), work)
                runs[variant].append(float(err.rsplit("LOOP", 1)[1]) if step == "events" else (cpu, wall))
        if step == "events":
            on, off = statistics.median(runs["on"]), statistics.median(runs["off"])
            print(f"events: loop of {3 * EVENTS_N} events (builtins.id, open) {on:.3f} s CPU with the ledger on, "
                  f"{off:.3f} s off: {(on - off) / (3 * EVENTS_N) * 1e6:.2f} us per event, on/off ratio {on / off:.3f}")
            continue
        med = {v: (statistics.median(c for c, _ in r), statistics.median(w for _, w in r)) for v, r in runs.items()}
        print(f"{step:>6}: ledger on {med['on'][0]:.2f} s CPU / {med['on'][1]:.2f} s wall, off "
              f"{med['off'][0]:.2f} s CPU / {med['off'][1]:.2f} s wall; on/off CPU ratio "
              f"{med['on'][0] / med['off'][0]:.3f}, wall ratio {med['on'][1] / med['off'][1]:.3f}")
    args = ["--data-dir", str(data), "--out", str(work / "run-count"), *TINY_DIN]
    err = timed(program("train", COUNT, args), work)[2]
    counts = json.loads(err.rsplit("EVENTS", 1)[1])
    total = sum(n for _, n in counts)
    per = hook_seconds_per_event([(e, SAMPLE_ARGS.get(e, ())) for e, _ in counts[:8]])
    print(f"train step: {total} audit events; the most frequent, with the hook's time per call here:")
    for event, n in counts[:8]:
        t = per.get(event)
        print(f"  {event:<22} {n:>8}  " + (f"{t * 1e6:6.2f} us  ({n * t:.3f} s)" if t else "(not timed)"))
    print(f"hook time over those events: {sum(n * per.get(e, 0) for e, n in counts[:8]):.3f} s")


if __name__ == "__main__":
    main()

"""Seconds of `no-test-in-training`'s content comparison at the real sizes (3.6M train, 379k test).

Synthetic tables shaped like MicroLens_1M_x1 (item_seq of up to 64 ids); prints the seconds of
hashing each table and of the overlap test, and checks that 1,000 planted copies are found.
Usage: python bench/bench_submission.py [--train 3600000] [--test 379000]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmctr import contract as C
from submission.overlap import copied_rows, row_hashes


def table(n: int, rng) -> pa.Table:
    lengths = rng.integers(0, 65, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    seq = pa.ListArray.from_arrays(pa.array(offsets), pa.array(rng.integers(1, 91718, offsets[-1])))
    return pa.table({C.USER_ID: rng.integers(1, 1_000_000, n), C.ITEM_SEQ: seq,
                     C.ITEM_ID: rng.integers(1, 91718, n), C.LIKES: rng.integers(0, 11, n),
                     C.VIEWS: rng.integers(0, 11, n)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=3_600_000)
    ap.add_argument("--test", type=int, default=379_000)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    train, test = table(a.train, rng), table(a.test, rng)
    train = pa.concat_tables([train, test.slice(0, 1000)])  # 1,000 test rows copied into train
    with tempfile.TemporaryDirectory() as d:
        tr, te = Path(d) / "train.parquet", Path(d) / "test.parquet"
        pq.write_table(train, tr)
        pq.write_table(test, te)
        t0 = time.perf_counter()
        n = copied_rows(te, tr)
        t1 = time.perf_counter()
        pq.write_table(train.slice(0, a.train), tr)  # honest: no copies
        t2 = time.perf_counter()
        n0 = copied_rows(te, tr)
        t3 = time.perf_counter()
    t4 = time.perf_counter()
    row_hashes(test)
    t5 = time.perf_counter()
    print(f"no-test-in-training, {a.train:,} train x {a.test:,} test rows (files read included):")
    print(f"  with 1,000 planted copies: {t1 - t0:.2f} s, found {n:,}")
    print(f"  honest (no copies): {t3 - t2:.2f} s, found {n0:,}")
    print(f"full row hash of the test table (item_seq included): {t5 - t4:.2f} s")


if __name__ == "__main__":
    main()

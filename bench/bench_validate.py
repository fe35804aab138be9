"""validate's cover check: covers/s of mmctr.validate.check_covers in a thread pool, by default
header + size guards + completeness (mmctr.images.check_cover), with --decode a full decode
(mmctr.images.open_cover, JPEG at 1/8 scale).

    python bench/bench_validate.py --n 91717 --width 720 --height 1280 --workers 2
Writes N JPEG covers into a temp folder (copies of --distinct noisy images, so generation stays
fast), times the check and prints covers/s and the time for the real set's 91,717 covers.
Not a test: prints figures. Runs on whatever cores it gets; say how many when you quote it.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REAL_COVERS = 91_717


def make_covers(folder: Path, n: int, width: int, height: int, distinct: int, noise: float,
                seed: int = 0) -> float:
    """n covers 1.jpg..n.jpg; returns their mean size in bytes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    blobs = []
    for k in range(min(distinct, n)):
        # smooth gradient + noise: compresses like a photo, not like a flat colour
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([(x * (k + 1)) % 256, (y * 3) % 256, ((x + y) // 2) % 256], -1)
        arr = np.clip(base + rng.normal(0, noise, size=base.shape), 0, 255).astype(np.uint8)
        p = folder / f"proto{k}.jpg"
        Image.fromarray(arr).save(p, quality=85)
        blobs.append(p.read_bytes())
        p.unlink()
    for i in range(1, n + 1):
        (folder / f"{i}.jpg").write_bytes(blobs[i % len(blobs)])
    return float(np.mean([len(b) for b in blobs]))


@click.command()
@click.option("--n", default=5000, show_default=True, help="covers to generate and check")
@click.option("--width", default=720, show_default=True)
@click.option("--height", default=1280, show_default=True)
@click.option("--distinct", default=50, show_default=True, help="distinct images among the N")
@click.option("--noise", default=18.0, show_default=True, help="pixel noise sd: sets the file size")
@click.option("--workers", type=int, default=None, help="threads (default: 2 x usable cores, max 8)")
@click.option("--decode", is_flag=True, help="full decode (validate --decode-covers) instead of header checks")
@click.option("--keep", type=click.Path(file_okay=False), help="generate here and keep the covers")
def main(n, width, height, distinct, noise, workers, decode, keep):
    from mmctr.validate import check_covers, usable_cores

    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-validate-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        mean_bytes = make_covers(folder, n, width, height, distinct, noise)
        t_make = time.perf_counter() - t0
        t0 = time.perf_counter()
        missing, bad = check_covers(folder, range(1, n + 1), decode=decode, workers=workers)
        t_check = time.perf_counter() - t0
        assert len(missing) == 0 and not bad, (missing[:3], bad[:3])
        rate = n / t_check
        print(f"covers: {n} x {width}x{height} JPEG (mean {mean_bytes / 1024:.0f} KiB), generated in {t_make:.1f} s")
        print(f"check_covers: {t_check:.2f} s = {rate:.0f} covers/s on {usable_cores()} "
              f"usable cores, workers={workers or 'default'}, "
              f"{'full decode' if decode else 'header + completeness'}")
        print(f"real set ({REAL_COVERS} covers): {REAL_COVERS / rate:.1f} s"
              + (" (measured)" if n >= REAL_COVERS else " (extrapolated linearly)"))
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

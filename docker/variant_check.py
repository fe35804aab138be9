"""Build-time check that the image's venv is the variant it claims (docker/variants.tsv).

    python docker/variant_check.py [--variant cu12] [--variants docker/variants.tsv]

Checks torch's version and CUDA build against the variant's row, and the CUDA base image's
CUDA_VERSION (set by nvidia/cuda images) against the variant's CUDA: a cu13 base with the cu12 lock
(or the reverse) would make the NVIDIA Container Toolkit demand the wrong driver. Prints one line
on success; exits 1 with one `error: ...` line otherwise. No GPU needed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

COLUMNS = ("variant", "lock", "base_image", "torch", "cuda", "min_driver", "gpus")


def read_variants(path: Path) -> dict[str, dict[str, str]]:
    """Rows of variants.tsv by variant name (comments and blank lines skipped)."""
    rows = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != len(COLUMNS):
            raise ValueError(f"{path}:{n}: {len(fields)} fields, expected {len(COLUMNS)} ({' '.join(COLUMNS)})")
        rows[fields[0]] = dict(zip(COLUMNS, fields))
    return rows


def _major_minor(version: str) -> tuple[int, int]:
    parts = version.split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


def problems(row: dict[str, str], torch_version: str, torch_cuda: str | None,
             base_cuda: str | None) -> list[str]:
    """What does not match the variant's row (empty: all good)."""
    out = []
    name = row["variant"]
    if torch_version.split("+")[0] != row["torch"]:
        out.append(f"variant {name} wants torch {row['torch']}, the venv has {torch_version} "
                   f"(was {row['lock']} installed?)")
    if torch_cuda is None:
        out.append(f"variant {name}: torch {torch_version} is a CPU-only build, expected CUDA {row['cuda']}")
    elif _major_minor(torch_cuda) != _major_minor(row["cuda"]):
        out.append(f"variant {name} wants a CUDA {row['cuda']} build of torch, the venv's is CUDA {torch_cuda}")
    if base_cuda:
        want, have = _major_minor(row["cuda"]), _major_minor(base_cuda)
        # the base's CUDA sets the toolkit's driver requirement (NVIDIA_REQUIRE_CUDA): same major,
        # not newer than the wheels' CUDA, or the image asks for a newer driver than torch needs
        if have[0] != want[0] or have[1] > want[1]:
            out.append(f"variant {name} (CUDA {row['cuda']}) on a CUDA {base_cuda} base image: "
                       f"build with --build-arg VARIANT={name} only on {row['base_image']} "
                       f"(docker/build.sh picks it)")
    return out


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default=os.environ.get("MMCTR_IMAGE_VARIANT", ""))
    ap.add_argument("--variants", type=Path, default=here / "variants.tsv")
    args = ap.parse_args(argv)
    rows = read_variants(args.variants)
    if args.variant not in rows:
        print(f"error: unknown image variant '{args.variant}' (MMCTR_IMAGE_VARIANT); "
              f"known: {', '.join(rows)} ({args.variants})", file=sys.stderr)
        return 1
    row = rows[args.variant]
    import torch

    errs = problems(row, torch.__version__, torch.version.cuda, os.environ.get("CUDA_VERSION"))
    if errs:
        print("error: " + "; ".join(errs), file=sys.stderr)
        return 1
    print(f"variant {row['variant']}: torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"NVIDIA driver >= {row['min_driver']}, GPUs of compute capability {row['gpus']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Open a cover image with bounded memory: one bad or hostile file is one CoverError, never GBs.

Guards, in order: the header's pixel count (before anything is decoded), an aspect ratio no
real cover has, a JPEG decoded at reduced scale (PIL draft: 1/2..1/8) and a pixel cap after
that draft, then a downscale so the longer side is at most `max_side`.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from pathlib import Path

from .errors import KitError

MAX_PIXELS = 50_000_000  # header width*height above this is refused before decoding
MAX_DECODE_PIXELS = 16_000_000  # pixels actually decoded (after draft); ~48 MB as RGB
MAX_ASPECT = 20  # longer side / shorter side; a 20000x1 "cover" is not a cover
TAIL_BYTES = 4096  # check_cover looks for the JPEG end marker this far from the end
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")  # what PIL may try; covers are .jpg


class CoverError(KitError):
    """A cover image that cannot be used: missing, empty, corrupt, not an image, oversized."""


@contextlib.contextmanager
def _guarded(path: Path):
    """Yield the PIL image of `path` opened lazily (header parsed, nothing decoded) after the
    size guards; turn every PIL/OS failure inside the block into one CoverError."""
    from PIL import Image

    if path.is_dir():
        raise CoverError(f"cover {path} is a folder, not an image file")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CoverError(f"cover {path} is missing") from None
    except OSError as exc:
        raise CoverError(f"cover {path} cannot be read: {exc.strerror or exc}") from None
    if size == 0:
        raise CoverError(f"cover {path} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own guard below
            with Image.open(path, formats=FORMATS) as img:
                w, h = img.size
                if w < 1 or h < 1:
                    raise CoverError(f"cover {path} has no pixels ({w}x{h})")
                if w * h > MAX_PIXELS:
                    raise CoverError(f"cover {path} is {w}x{h} pixels, over the "
                                     f"{MAX_PIXELS // 1_000_000} MP limit")
                if max(w, h) > MAX_ASPECT * min(w, h):
                    raise CoverError(f"cover {path} is {w}x{h} pixels: aspect ratio over "
                                     f"{MAX_ASPECT}:1 is not a cover image")
                yield img
    except CoverError:
        raise
    except Image.UnidentifiedImageError:
        raise CoverError(f"cover {path} is not an image (unknown or disallowed format; "
                         f"allowed: {', '.join(FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise CoverError(f"cover {path} is too large to decode ({_why(exc)})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # PIL's corrupt-file errors
        raise CoverError(f"cover {path} is corrupt or truncated ({_why(exc)})") from None


def open_cover(path, max_side: int):
    """Decode `path` to an RGB PIL image whose longer side is at most `max_side` pixels.

    Raises CoverError naming the file when it is missing, empty, a folder, not an image,
    truncated/corrupt, larger than MAX_PIXELS, or of an absurd aspect ratio.
    """
    from PIL import Image

    path = Path(path)
    max_side = int(max_side)
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    with _guarded(path) as img:
        w, h = img.size
        if img.format == "JPEG":
            # ask for the smallest draft whose longer side is still >= max_side
            f = min(1.0, max_side / max(w, h))
            img.draft("RGB", (max(1, math.ceil(w * f)), max(1, math.ceil(h * f))))
        dw, dh = img.size
        if dw * dh > MAX_DECODE_PIXELS:
            raise CoverError(f"cover {path} would decode to {dw}x{dh} pixels, over the "
                             f"{MAX_DECODE_PIXELS // 1_000_000} MP decode limit")
        img.load()
        rgb = img.convert("RGB")
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.BILINEAR)
    return rgb


def check_cover(path) -> tuple:
    """Cheap check without decoding pixels: the guards of open_cover on the parsed header, plus
    a complete file (a JPEG must end with its end-of-image marker after its last scan; other
    formats are walked by PIL's verify). Returns (width, height); raises CoverError.

    A JPEG without its end marker near the end (a cut copy, or data appended after the image)
    is decoded in full to decide. A file damaged in the middle of its scan data may only fail
    on a full decode (open_cover).
    """
    path = Path(path)
    with _guarded(path) as img:
        size = img.size
        if img.format == "JPEG":
            with open(path, "rb") as f:
                n = f.seek(0, os.SEEK_END)
                f.seek(max(0, n - TAIL_BYTES))
                tail = f.read()
            eoi = tail.rfind(b"\xff\xd9")
            complete = eoi >= 0 and not (n <= TAIL_BYTES and eoi < tail.rfind(b"\xff\xda"))
        else:
            img.verify()
            complete = True
    if not complete:  # no end marker near the end: truncated, or trailing data; decode to decide
        open_cover(path, 32)
    return size


def _why(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

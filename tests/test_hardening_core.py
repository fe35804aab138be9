"""Issue 10 (hardening) probes for the shared mmctr/ layer: covers, validate, CLI errors, metrics,
item_info, atomic outputs, allocation checks; and issue 9's data-dir write guards."""
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.images import MAX_PIXELS, CoverError, open_cover
from mmctr.validate import validate, validate_table

from conftest import ROOT


# ---------- helpers ----------

def make_jpeg(path, w, h, color=(200, 30, 90)):
    Image.new("RGB", (w, h), color).save(path, format="JPEG", quality=80)
    return path


def patch_jpeg_size(path, w, h):
    """Rewrite the SOF0 header so the file claims w x h pixels (the scan data stays small)."""
    b = bytearray(path.read_bytes())
    i = b.index(b"\xff\xc0")
    b[i + 5:i + 9] = struct.pack(">HH", h, w)
    path.write_bytes(bytes(b))
    return path


@pytest.fixture()
def data(tiny_data, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(tiny_data, dst)
    return dst


def rewrite(path, fn):
    pq.write_table(fn(pq.read_table(path)), path)


def set_column(t, name, values):
    return t.set_column(t.column_names.index(name), name,
                        values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values))


# ---------- open_cover ----------

def test_open_cover_downscales_to_max_side(tmp_path):
    img = open_cover(make_jpeg(tmp_path / "1.jpg", 640, 360), 64)
    assert img.mode == "RGB" and img.size == (64, 36)
    png = tmp_path / "2.jpg"
    Image.new("L", (50, 80), 128).save(png, format="PNG")  # a PNG named .jpg still opens
    img = open_cover(png, 64)
    assert img.mode == "RGB" and img.size == (40, 64)


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "folder", "missing"])
def test_open_cover_bad_file_is_one_cover_error_naming_it(tmp_path, kind):
    p = tmp_path / "7.jpg"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not an image\n" * 10)
    elif kind == "truncated":
        make_jpeg(tmp_path / "big.jpg", 400, 300)
        Image.effect_noise((400, 300), 60).convert("RGB").save(tmp_path / "big.jpg", quality=90)
        p.write_bytes((tmp_path / "big.jpg").read_bytes()[:3000])
    elif kind == "folder":
        p.mkdir()
    with pytest.raises(CoverError, match="7.jpg") as exc:
        open_cover(p, 64)
    assert isinstance(exc.value, KitError)
    assert "\n" not in str(exc.value)


def test_open_cover_refuses_huge_header_before_decoding(tmp_path):
    p = patch_jpeg_size(make_jpeg(tmp_path / "3.jpg", 64, 64), 10_000, 9_000)  # claims 90 MP
    assert 10_000 * 9_000 > MAX_PIXELS
    with pytest.raises(CoverError, match=r"3\.jpg is 10000x9000 pixels, over the 50 MP limit"):
        open_cover(p, 64)


def test_open_cover_refuses_20000x1(tmp_path):
    p = make_jpeg(tmp_path / "4.jpg", 20_000, 1)  # the 5.9 GB cover
    with pytest.raises(CoverError, match=r"4\.jpg is 20000x1 pixels: aspect ratio"):
        open_cover(p, 224)


def test_open_cover_decodes_large_jpeg_at_reduced_scale(tmp_path):
    """A 24 MP JPEG (72 MB as RGB) must decode via draft in a few MB, not the full frame."""
    p = tmp_path / "5.jpg"
    Image.new("RGB", (6000, 4000), (10, 120, 200)).save(p, quality=80)
    code = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(ROOT)!r})
        from mmctr.images import open_cover
        from PIL import Image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        img = open_cover({str(p)!r}, 256)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(img.size, (after - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    size, grown_mb = out.rsplit(" ", 1)
    assert size == "(256, 171)"
    assert int(grown_mb) < 30, f"decoding took {grown_mb} MB more"


# ---------- validate_table (public) ----------

def test_validate_table_public_on_any_path(tiny_data, tmp_path):
    src = tiny_data / C.ITEM_INFO.relpath
    assert validate_table(src, C.ITEM_INFO) == []
    t = pq.read_table(src)
    emb = pc_cast_list(t.column(C.ITEM_EMB), pa.float64())
    pq.write_table(set_column(t, C.ITEM_EMB, emb), tmp_path / "mine.parquet")
    problems = validate_table(tmp_path / "mine.parquet", C.ITEM_INFO, label="run/item_info.parquet")
    assert [str(p) for p in problems] == [
        "run/item_info.parquet:item_emb_d128: values are float64, expected exactly float32 "
        "(the contract's list<float> of float32: cast before writing)"]
    assert validate_table(tmp_path / "nope.parquet", C.ITEM_INFO)[0].message == "file missing"
    (tmp_path / "junk.parquet").write_text("a,b\n1,2\n")
    assert "cannot be read as parquet" in str(validate_table(tmp_path / "junk.parquet", C.ITEM_INFO)[0])


def pc_cast_list(col, value_type):
    return col.cast(pa.list_(value_type))

"""mmctr.images: open_cover / check_cover on bad, huge and large covers."""
import os
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from mmctr.errors import KitError
from mmctr.images import MAX_PIXELS, CoverError, open_cover

from conftest import ROOT, make_jpeg, patch_jpeg_size


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


@pytest.mark.parametrize("cut", [0.99, 0.7, 0.3])
def test_check_cover_catches_truncation_without_decoding(tmp_path, cut):
    from mmctr.images import check_cover

    full = tmp_path / "full.jpg"
    Image.effect_noise((300, 200), 40).convert("RGB").save(full, quality=90)
    assert check_cover(full) == (300, 200)
    p = tmp_path / "11.jpg"
    p.write_bytes(full.read_bytes()[:int(full.stat().st_size * cut)])
    with pytest.raises(CoverError, match=r"11\.jpg is corrupt or truncated"):
        check_cover(p)
    with pytest.raises(CoverError, match=r"11\.jpg is corrupt or truncated"):
        open_cover(p, 64)


def test_check_cover_accepts_trailing_data_after_the_image(tmp_path):
    from mmctr.images import check_cover

    p = tmp_path / "12.jpg"
    Image.effect_noise((300, 200), 40).convert("RGB").save(p, quality=90)
    p.write_bytes(p.read_bytes() + os.urandom(8000).replace(b"\xff", b"\x00"))  # a camera trailer
    assert check_cover(p) == (300, 200)


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

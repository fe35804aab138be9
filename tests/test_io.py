"""mmctr.io: atomic outputs and their file modes, allocation checks."""
import os

import pyarrow as pa
import pytest

from mmctr import io as kio
from mmctr.errors import KitError


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_outputs_get_plain_open_modes(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        kio.write_json(tmp_path / "m.json", {"a": 1})
        kio.write_parquet(tmp_path / "t.parquet", pa.table({"x": [1, 2]}))
        with kio.atomic_path(tmp_path / "raw.bin") as tmp:
            tmp.write_bytes(b"x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == mode
    for name in ("m.json", "t.parquet", "raw.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert kio.current_umask() == old


def test_check_alloc_refuses_before_allocating(monkeypatch):
    kio.check_alloc(1 << 20, "a small buffer")
    with pytest.raises(KitError, match=r"^tag embedding table \(2000001 x 64 float32\) needs 488.3 MiB but "
                                       r"only 100.0 MiB of memory is available"):
        monkeypatch.setattr(kio, "available_memory", lambda: 100 << 20)
        kio.check_alloc(2_000_001 * 64 * 4, "tag embedding table (2000001 x 64 float32)")
    monkeypatch.undo()
    with pytest.raises(KitError, match=r"tag ids near 1e9 needs 1024.0 TiB but only .* available"):
        kio.check_alloc(1 << 50, "tag ids near 1e9")  # no machine has this: the real check refuses
    with pytest.raises(KitError, match="negative size"):
        kio.check_alloc(-5, "x")


def test_available_memory_is_plausible():
    avail = kio.available_memory()
    assert avail is None or 1 << 26 < avail < 1 << 50


def test_atomic_write_through_link_dotdot_lands_where_the_kernel_puts_it(tmp_path):
    """`--out a/link/../f`: mkstemp collapsed `link/..` lexically, so the temp file went to another
    folder (or failed: `mmctr sample --out link/..` half-rewrote a sample, then died)."""
    from mmctr.io import write_json

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "ctr").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "link").symlink_to(tmp_path / "real" / "sub")
    write_json(tmp_path / "a" / "link" / ".." / "ctr" / "f.json", {"x": 1})
    assert (tmp_path / "real" / "ctr" / "f.json").is_file()
    assert not (tmp_path / "a" / "ctr").exists()

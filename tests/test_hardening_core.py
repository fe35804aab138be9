"""Issue 10 (hardening) probes for the shared mmctr/ layer: covers, validate, CLI errors, metrics,
item_info, atomic outputs, allocation checks; and issue 9's data-dir write guards."""
import os
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
def data(data_copy):
    return data_copy


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


# ---------- CLI error wrapper ----------

import click  # noqa: E402

from mmctr.cli import run  # noqa: E402


@click.group()
def demo_cli():
    pass


@demo_cli.command()
@click.argument("what")
@click.option("--n", type=int, default=1)
def boom(what, n):
    if what == "kit":
        raise KitError("config key 'x' = 5 is outside [0, 1]\nsecond line")
    if what == "perm":
        raise PermissionError(13, "Permission denied", "/srv/out/model.pt")
    if what == "missing":
        open("/nonexistent/dir/file.parquet")
    if what == "isdir":
        raise IsADirectoryError(21, "Is a directory", "/srv/data/7.jpg")
    if what == "memory":
        raise MemoryError()
    if what == "bug":
        {}["missing_key"]
    if what == "exit1":
        click.get_current_context().exit(1)


def run_demo(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        run(demo_cli, list(args))
    err = capsys.readouterr().err
    return exc.value.code, err


@pytest.mark.parametrize("what, expected", [
    ("kit", "error: config key 'x' = 5 is outside [0, 1]; second line"),
    ("perm", "error: permission denied: /srv/out/model.pt"),
    ("missing", "error: no such file or directory: /nonexistent/dir/file.parquet"),
    ("isdir", "error: is a folder, not a file: /srv/data/7.jpg"),
    ("memory", "error: out of memory: "),
])
def test_run_expected_failures_are_one_line_exit_2(capsys, what, expected):
    code, err = run_demo(capsys, "boom", what)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(expected), err
    assert "Traceback" not in err


def test_run_usage_errors_are_one_line_exit_2(capsys):
    for args in (["boom"], ["boom", "x", "--n", "abc"], ["nosuch"], ["boom", "x", "--bogus"]):
        code, err = run_demo(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), (args, err)
    assert "'abc' is not a valid integer" in run_demo(capsys, "boom", "x", "--n", "abc")[1]
    assert run_demo(capsys, "boom", "exit1")[0] == 1
    with pytest.raises(SystemExit) as exc:
        run(demo_cli, [])  # bare group: its help on stdout, not an error
    out = capsys.readouterr()
    assert exc.value.code == 0 and "Commands:" in out.out and out.err == ""


def test_run_unexpected_error_one_line_and_traceback_log(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MMCTR_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("MMCTR_DEBUG", raising=False)
    code, err = run_demo(capsys, "boom", "bug")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: unexpected KeyError: 'missing_key' (traceback in ")
    logs = list((tmp_path / "logs").glob("mmctr-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "{}[\"missing_key\"]" in text


def test_run_debug_env_shows_traceback_inline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MMCTR_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("MMCTR_DEBUG", "1")
    code, err = run_demo(capsys, "boom", "bug")
    assert code == 2 and "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == "error: unexpected KeyError: 'missing_key'"
    assert not (tmp_path / "logs").exists()


def test_cli_subprocess_one_line_errors(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MMCTR_LOG_DIR=str(tmp_path / "logs"))
    env.pop("MMCTR_DEBUG", None)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mmctr", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path)

    r = cli("validate", "--data-dir", str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr == f"error: data directory not found: {tmp_path / 'nope'}\n"
    r = cli("sample")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Missing option '--out'" in r.stderr
    r = cli("sample", "--out", str(tmp_path / "s"), "--items", "abc")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "'abc' is not a valid integer" in r.stderr
    bug = ("import click, sys\nfrom mmctr.cli import run\n@click.command()\ndef c():\n"
           "    raise RuntimeError('device foo not understood')\nrun(c)\n")
    r = subprocess.run([sys.executable, "-c", bug], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: unexpected RuntimeError: device foo not understood (traceback in ")
    assert len(list((tmp_path / "logs").glob("mmctr-error-*.log"))) == 1


# ---------- read_item_info ----------

from mmctr.item_info import read_item_info, write_item_info  # noqa: E402


def info_copy(tiny_data, tmp_path, fn):
    t = pq.read_table(tiny_data / C.ITEM_INFO.relpath)
    p = tmp_path / "item_info.parquet"
    pq.write_table(fn(t), p)
    return p


def with_list_value(t, name, row, pos, value, value_type):
    rows = t.column(name).to_pylist()
    rows[row][pos] = value
    return set_column(t, name, pa.array(rows, type=pa.list_(value_type)))


def test_read_item_info_ok(tiny_data):
    tags, emb = read_item_info(tiny_data / C.ITEM_INFO.relpath)
    assert tags.dtype == np.int64 and emb.dtype == np.float32 and len(tags) == len(emb) == 301
    assert tags.flags.writeable and emb.flags.writeable  # callers edit them


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_read_item_info_refuses_non_finite_naming_row(tiny_data, tmp_path, value):
    p = info_copy(tiny_data, tmp_path, lambda t: with_list_value(t, C.ITEM_EMB, 42, 3, value, pa.float32()))
    with pytest.raises(KitError, match=r"item_info.parquet:item_emb_d128 row 42 holds NaN or inf"):
        read_item_info(p)


def test_read_item_info_refuses_float64_embeddings(tiny_data, tmp_path):
    p = info_copy(tiny_data, tmp_path, lambda t: set_column(
        t, C.ITEM_EMB, t.column(C.ITEM_EMB).cast(pa.list_(pa.float64()))))
    with pytest.raises(KitError, match=r"item_emb_d128 has type list<.*double>, expected a list of 128 float32"):
        read_item_info(p)


def test_read_item_info_refuses_float_item_ids(tiny_data, tmp_path):
    p = info_copy(tiny_data, tmp_path, lambda t: set_column(
        t, C.ITEM_ID, pa.array(np.arange(t.num_rows) + 0.4)))
    with pytest.raises(KitError, match=r"item_id has type double, expected integers \(float ids are refused"):
        read_item_info(p)


@pytest.mark.parametrize("rows", [0, 1])
def test_read_item_info_empty_is_clear(tiny_data, tmp_path, rows):
    p = info_copy(tiny_data, tmp_path, lambda t: t.slice(0, rows))
    with pytest.raises(KitError, match=rf"has no items \({rows} row\(s\)\)"):
        read_item_info(p)


@pytest.mark.parametrize("tag", [2_000_000, -7, C.TAG_VOCAB + 1])
def test_read_item_info_bounds_tag_ids_naming_row(tiny_data, tmp_path, tag):
    p = info_copy(tiny_data, tmp_path, lambda t: with_list_value(t, C.ITEM_TAGS, 9, 4, tag, pa.int64()))
    with pytest.raises(KitError, match=rf"item_tags row 9 has tag id {tag} outside 0..11740"):
        read_item_info(p)
    ok = info_copy(tiny_data, tmp_path, lambda t: with_list_value(t, C.ITEM_TAGS, 9, 4, C.TAG_VOCAB, pa.int64()))
    assert read_item_info(ok)[0][9, 4] == C.TAG_VOCAB


def test_read_item_info_not_parquet_and_nulls(tiny_data, tmp_path):
    p = tmp_path / "item_info.parquet"
    p.write_text("item_id,item_tags\n0,1\n")
    with pytest.raises(KitError, match="is not a readable parquet file"):
        read_item_info(p)
    p = info_copy(tiny_data, tmp_path, lambda t: with_list_value(t, C.ITEM_EMB, 5, 0, None, pa.float32()))
    with pytest.raises(KitError, match="item_emb_d128 row 5 holds a null value"):
        read_item_info(p)


def test_write_item_info_bounds_tags(tmp_path):
    tags, emb = np.zeros((4, C.TAGS_LEN), np.int64), np.ones((4, C.EMB_DIM), np.float32)
    tags[2, 1] = 2_000_000
    with pytest.raises(KitError, match=r"item_tags row 2 has tag id 2000000"):
        write_item_info(tmp_path / "x.parquet", tags, emb)
    assert not (tmp_path / "x.parquet").exists()


# ---------- validate: the gaps ----------

def msgs(data, **kw):
    return [str(p) for p in validate(data, **kw)]


@pytest.mark.parametrize("decode", [False, True])
def test_validate_checks_covers(data, decode):
    d = data / C.IMAGES_DIR
    (d / "3.jpg").write_bytes(b"")
    (d / "4.jpg").write_text("not an image")
    (d / "5.jpg").write_bytes((d / "5.jpg").read_bytes()[:200])
    (d / "7.jpg").unlink()
    (d / "7.jpg").mkdir()
    patch_jpeg_size(d / "8.jpg", 20_000, 1)
    (d / "9.jpg").unlink()
    (d / "10.jpg").write_bytes((d / "10.jpg").read_bytes()[:-300])  # cut copy: header intact
    out = msgs(data, decode_covers=decode)
    assert len(out) == 2, out
    assert out[0] == "item_images: 1 of 300 cover images missing (first: 9.jpg)"
    assert out[1].startswith("item_images: 6 of 300 cover images unusable: 3.jpg is empty (0 bytes); ")
    for name, why in (("3.jpg", "is empty (0 bytes)"), ("4.jpg", "is not an image"),
                      ("5.jpg", "is corrupt or truncated"), ("7.jpg", "is a folder"),
                      ("8.jpg", "is 20000x1 pixels")):  # 10.jpg is the 6th, not shown
        assert f"{name} {why}" in out[1], (name, out[1])
    assert msgs(data, images=False) == []


def test_validate_flags_float64_embeddings(data):
    rewrite(data / C.ITEM_INFO.relpath, lambda t: set_column(
        t, C.ITEM_EMB, t.column(C.ITEM_EMB).cast(pa.list_(pa.float64()))))
    assert msgs(data, images=False) == [
        "MicroLens_1M_x1/item_info.parquet:item_emb_d128: values are float64, expected exactly float32 "
        "(the contract's list<float> of float32: cast before writing)"]


def test_validate_catches_shuffled_item_info_renumbered(data):
    def shuffle(t):
        order = np.r_[0, np.random.default_rng(0).permutation(np.arange(1, t.num_rows))]
        t = t.take(order)
        return set_column(t, C.ITEM_ID, pa.array(np.arange(t.num_rows), type=pa.int64()))
    rewrite(data / C.ITEM_INFO.relpath, shuffle)
    out = msgs(data, images=False)
    assert len(out) == 1 and out[0].startswith("MicroLens_1M_x1/item_info.parquet:item_tags row ")
    assert "item_tags differ from item_feature.parquet's tags of that item_id" in out[0]


def test_validate_flags_float_item_ids(data):
    rewrite(data / C.TRAIN.relpath, lambda t: set_column(t, C.ITEM_ID, pa.array(
        t.column(C.ITEM_ID).to_numpy().astype(np.float64) + 0.5)))
    rewrite(data / C.ITEM_INFO.relpath, lambda t: set_column(t, C.ITEM_ID, pa.array(
        np.arange(t.num_rows, dtype=np.float64))))
    out = msgs(data, images=False)
    assert "MicroLens_1M_x1/train.parquet:item_id: has type double, expected int (float ids are " \
           "refused, not truncated: write integers)" in out
    assert any(m.startswith("MicroLens_1M_x1/item_info.parquet:item_id: has type double") for m in out)


@pytest.mark.parametrize("table", [C.TRAIN, C.VALID, C.TEST, C.ITEM_SEQ_TABLE])
def test_validate_flags_negative_sequence_ids(data, table):
    def corrupt(t):
        seqs = t.column(C.ITEM_SEQ).to_pylist()
        seqs[6][-2] = -3
        return set_column(t, C.ITEM_SEQ, pa.array(seqs, type=pa.list_(pa.int64())))
    rewrite(data / table.relpath, corrupt)
    assert msgs(data, images=False) == [
        f"{table.relpath}:item_seq row 6: value outside [0, 300] or not finite"]


def test_validate_negative_ids_flagged_without_item_info(data):
    def corrupt(t):
        seqs = t.column(C.ITEM_SEQ).to_pylist()
        seqs[2][-1] = -1
        return set_column(t, C.ITEM_SEQ, pa.array(seqs, type=pa.list_(pa.int64())))
    rewrite(data / C.ITEM_SEQ_TABLE.relpath, corrupt)
    problems = validate_table(data / C.ITEM_SEQ_TABLE.relpath, C.ITEM_SEQ_TABLE)
    assert [str(p) for p in problems] == ["item_seq.parquet:item_seq row 2: value outside [0, None] or not finite"]


@pytest.mark.parametrize("table", [C.ITEM_INFO, C.ITEM_FEATURE])
def test_validate_bounds_tag_ids(data, table):
    rewrite(data / table.relpath, lambda t: with_list_value(t, C.ITEM_TAGS, 4, 4, 2_000_000, pa.int64()))
    out = msgs(data, images=False)
    assert f"{table.relpath}:item_tags row 4: value outside [0, {C.TAG_VOCAB}] or not finite" in out
    assert len(out) == 2  # and the two files' tags no longer agree on that item
    assert any("item_tags differ from item_feature" in m for m in out)


@pytest.mark.parametrize("rows", [0, 1])
def test_validate_empty_item_info_is_one_clear_message(data, rows):
    rewrite(data / C.ITEM_INFO.relpath, lambda t: t.slice(0, rows))
    assert msgs(data) == [f"MicroLens_1M_x1/item_info.parquet: has no items ({rows} row(s); row 0 is "
                          "padding, items start at row 1)"]


def snapshot(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns, p.stat().st_size)
                  for p in root.rglob("*"))


def test_validate_cli_never_writes_into_the_data_dir(data):
    (data / C.IMAGES_DIR / "3.jpg").write_bytes(b"")
    before = snapshot(data)
    r = subprocess.run([sys.executable, "-m", "mmctr", "validate", "--data-dir", str(data)],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 1 and "3.jpg is empty (0 bytes)" in r.stderr
    assert snapshot(data) == before


# ---------- io: file modes, allocation checks ----------

from mmctr import io as kio  # noqa: E402


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


# ---------- issue 9: the sampler never overwrites a data set ----------

from mmctr.sample import MARKER, SampleConfig, generate  # noqa: E402

MINI = SampleConfig(n_items=40, n_users=50, n_train=300, n_valid=100, n_test=100, image_size=16, workers=1)


def sample_cli(*args):
    return subprocess.run([sys.executable, "-m", "mmctr", "sample", *args], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_sample_refuses_an_existing_data_set(data):
    (data / MARKER).unlink()  # as the organisers ship it: no sampler marker
    before = snapshot(data)
    small = ["--items", "40", "--users", "50", "--train", "300", "--valid", "100", "--test", "100"]
    for target in (data, data / C.CTR_DIR, data / "inside"):
        r = sample_cli("--out", str(target), *small)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"error: --out {target} is ")
        assert "data set" in r.stderr
    with pytest.raises(KitError, match="is a data set"):
        generate(data, MINI)
    assert snapshot(data) == before


def test_sample_refuses_a_foreign_folder_but_overwrites_its_own(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(KitError, match="is a non-empty folder that the sampler did not make"):
        generate(foreign, MINI)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(KitError, match="is a file, not a folder"):
        generate(tmp_path / "afile", MINI)
    empty = tmp_path / "empty"
    empty.mkdir()
    generate(empty, MINI)
    first = (empty / C.TRAIN.relpath).read_bytes()
    generate(empty, SampleConfig(**{**MINI.__dict__, "seed": 3}))  # a previous sample: replaced
    assert (empty / MARKER).is_file() and (empty / C.TRAIN.relpath).read_bytes() != first


# ---------- config booleans: YAML 1.2 (true/false only), in files and `--set` ----------

from mmctr.config import Section, build, parse_sets, read_yaml, yaml_value  # noqa: E402

YAML11_BOOLS = ["yes", "no", "on", "off", "y", "n", "Yes", "NO", "On", "OFF", "Y", "N"]


class _Flags(Section):
    flag: bool = False
    name: str = ""


@pytest.mark.parametrize("word", YAML11_BOOLS)
def test_yaml11_bool_words_are_strings_in_files_and_sets(tmp_path, word):
    f = tmp_path / "c.yaml"
    f.write_text(f"flag: {word}\nsection:\n  {word}: {word}\n")
    assert read_yaml(f) == {"flag": word, "section": {word: word}}
    assert yaml_value(word) == word and parse_sets([f"a.b={word}"]) == {"a": {"b": word}}
    assert build(_Flags, {"name": word}).name == word  # a string where a string is wanted


@pytest.mark.parametrize("word", YAML11_BOOLS + ["1", "0", "'true'"])
def test_bool_config_keys_refuse_all_but_true_false(word):
    with pytest.raises(KitError) as err:
        build(_Flags, parse_sets([f"flag={word}"]), "c.yaml")
    msg = str(err.value)
    assert msg.startswith("c.yaml: config key 'flag' = ") and msg.endswith("use true or false")
    assert "\n" not in msg


@pytest.mark.parametrize("word, value", [("true", True), ("false", False), ("True", True), ("FALSE", False)])
def test_yaml12_booleans_still_read(tmp_path, word, value):
    f = tmp_path / "c.yaml"
    f.write_text(f"flag: {word}\n")
    assert build(_Flags, read_yaml(f)).flag is value
    assert build(_Flags, parse_sets([f"flag={word}"])).flag is value


def test_explicit_bool_tag_with_a_yaml11_word_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("flag: !!bool yes\n")
    with pytest.raises(KitError, match=r"c\.yaml: not valid YAML: .*use true or false"):
        read_yaml(f)
    with pytest.raises(KitError, match=r"override flag: .*use true or false"):
        parse_sets(["flag=!!bool on"])


@pytest.mark.parametrize("key", ["text.enabled", "image.enabled", "behaviour.item_seq",
                                 "behaviour.train_sequences", "precomputed.enabled"])
def test_task1_bool_keys_refuse_yaml11_words(tmp_path, key):
    from task1.config import load_config as task1_config

    with pytest.raises(KitError, match=rf"config key '{key}' = 'no': .*use true or false"):
        task1_config("default", parse_sets([f"{key}=no"]))
    sec, name = key.split(".")
    f = tmp_path / "t1.yaml"
    f.write_text(f"{sec}:\n  {name}: off\n")
    with pytest.raises(KitError, match=rf"t1\.yaml: config key '{key}' = 'off': .*use true or false"):
        task1_config(f)
    assert getattr(getattr(task1_config("default", parse_sets([f"{key}=false"])), sec), name) is False


@pytest.mark.parametrize("cli_args, key", [
    (["task1", "build", "--config", "provided_features", "--set", "tags.enabled=yes"], "tags.enabled"),
    (["task2", "train", "--config", "transformer_dcn_small", "--set", "batch_norm=on"], "batch_norm"),
    (["task2", "train", "--config", "din_baseline", "--set", "din_use_softmax=n"], "din_use_softmax"),
])
def test_cli_set_yaml11_bool_is_one_line_error(tiny_data, tmp_path, cli_args, key):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MMCTR_LOG_DIR=str(tmp_path / "logs"))
    env.pop("MMCTR_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", *cli_args, "--data-dir", str(tiny_data),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: ") and f"config key '{key}'" in r.stderr
    assert r.stderr.rstrip().endswith("use true or false")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, value", [
    ("010", 10), ("-007", -7), ("0o10", 8), ("0x1F", 31), ("1_000", 1000), ("12", 12),  # YAML 1.1: 010 = 8
    ("1:30", "1:30"), ("1:30.5", "1:30.5"), ("190:20:30", "190:20:30"),  # YAML 1.1: sexagesimal 90, 90.5...
    ("1.5", 1.5), ("5e-2", 0.05), ("-.inf", float("-inf")), (".5", 0.5), ("0b101", "0b101"),
])
def test_yaml_numbers_read_as_yaml12(tmp_path, text, value):
    assert yaml_value(text) == value and type(yaml_value(text)) is type(value)
    f = tmp_path / "c.yaml"
    f.write_text(f"k: {text}\n")
    assert read_yaml(f) == {"k": value}


def test_leading_zero_and_sexagesimal_config_values(tmp_path):
    from task2.config import load_config as task2_config

    f = tmp_path / "c.yaml"
    f.write_text("model: transformer_dcn\nmax_len: 064\nseed: 0123\n")
    cfg = task2_config(f)
    assert cfg.train.max_len == 64 and cfg.train.seed == 123
    f.write_text("model: transformer_dcn\nmax_epochs: 1:30\n")
    with pytest.raises(KitError, match=r"config key 'max_epochs' = '1:30': Input should be a valid integer"):
        task2_config(f)

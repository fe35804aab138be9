"""mmctr.paths: outputs are never written into a data set, even by commands without --data-dir."""
import pytest

from mmctr.errors import KitError


@pytest.mark.parametrize("argv", [
    ["submission", "notebook", "--track", "task2", "--out", "{link}/nb.ipynb"],
    ["mmctr", "report", "--runs-root", "{runs}", "--out", "{link}/r.png"],
])
def test_commands_without_data_dir_do_not_write_into_a_data_set(argv, tiny_data, tmp_path, monkeypatch,
                                                                  capsys):
    """`submission notebook` and `mmctr report` take no --data-dir: an --out through a link into
    MicroLens_1M_x1/ was written there."""
    import sys

    from mmctr.cli import entry as mmctr_entry
    from submission.cli import entry as submission_entry

    from mmctr import contract as C

    (tmp_path / "runs").mkdir()
    (tmp_path / "link").symlink_to(tiny_data / C.CTR_DIR)
    before = sorted(p.name for p in (tiny_data / C.CTR_DIR).iterdir())
    args = [a.format(link=tmp_path / "link", runs=tmp_path / "runs") for a in argv]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exc:
        (submission_entry if args[0] == "submission" else mmctr_entry)()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and "inside the data directory" in err, err
    assert sorted(p.name for p in (tiny_data / C.CTR_DIR).iterdir()) == before


def test_outputs_beside_a_data_set_stay_allowed(tmp_path):
    from mmctr import contract as C
    from mmctr.paths import refuse_data_like

    (tmp_path / C.CTR_DIR).mkdir()
    refuse_data_like(tmp_path / "runs" / "report.png")  # ~/mm/runs next to ~/mm/MicroLens_1M_x1
    with pytest.raises(KitError):
        refuse_data_like(tmp_path / "report.png")

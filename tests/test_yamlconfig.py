"""Config files and `--set`: YAML 1.2 booleans (true/false only) and numbers (mmctr.yamlconfig via mmctr.config)."""
import pytest

from mmctr.config import Section, build, parse_sets, read_yaml, yaml_value
from mmctr.errors import KitError

from conftest import kit_cli


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
def test_cli_set_yaml11_bool_is_one_line_error(tiny_data, tmp_path, cli_args, key, monkeypatch, capsys):
    """The command's click group in this process, as `python -m` runs it (the error comes before any work)."""
    from task1.cli import main as task1_main
    from task2.cli import main as task2_main

    monkeypatch.setenv("MMCTR_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("MMCTR_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    group = {"task1": task1_main, "task2": task2_main}[cli_args[0]]
    rc, _, err = kit_cli(capsys, group, *cli_args[1:], "--data-dir", tiny_data, "--out", tmp_path / "out")
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("error: ") and f"config key '{key}'" in err
    assert err.rstrip().endswith("use true or false")
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

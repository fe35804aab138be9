"""task2 typed config: every bad key or value is one KitError at load time, naming key and range."""

import pytest
import torch

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.item_info import read_item_info
from task2.config import RUNTIME_KEYS, RunConfig, load_config, model_config, parse_overrides
from task2.models import create_model
from task2.models.din import DINConfig
from task2.models.transformer_dcn import TransformerDCNConfig

from conftest import ROOT, kit_cli


def _load(name, *sets):
    return load_config(name, parse_overrides(list(sets)))


@pytest.mark.parametrize("setting, message", [
    ("batch_size=true", r"'batch_size' = True: Input should be a valid integer"),
    ("seed=abc", r"'seed' = 'abc': Input should be a valid integer"),
    ("num_threads=-2", r"'num_threads' = -2: Input should be greater than or equal to 0"),
    ("eval_batch_size=-1", r"'eval_batch_size' = -1: Input should be greater than or equal to 1"),
    ("embedding_dim=0", r"'embedding_dim' = 0: Input should be greater than or equal to 1"),
    ("lr_decay_factor=7", r"'lr_decay_factor' = 7: Input should be less than or equal to 1"),
    ("early_stop_patience=-1", r"'early_stop_patience' = -1: Input should be greater than or equal to 1"),
    ("device=foo", r"'device' = 'foo': Value error, must be auto, cpu, cuda or cuda:N"),
    ("learning_rate=1e8", r"'learning_rate' = 100000000.0: Input should be less than or equal to 10"),
    ("learning_rate=0", r"'learning_rate' = 0: Input should be greater than 0"),
    ("n_heads=3", r"'n_heads' = 3: Value error, n_heads = 3 must divide d_model = 64"),
    ("code_sizes=[0]", r"'code_sizes' = \[0\]: Value error, each code size must be in 1..1000000"),
    ("amp=1", r"'amp' = 1: Input should be a valid boolean; use true or false"),
    ("amp=yes", r"'amp' = 'yes': Input should be a valid boolean; use true or false"),
    ("compile=on", r"'compile' = 'on': Input should be a valid boolean; use true or false"),
    ("batch_norm=off", r"'batch_norm' = 'off': Input should be a valid boolean; use true or false"),
    ("dnn_hidden_units=[0]", r"'dnn_hidden_units' = \[0\]: Value error, every width must be in 1..65536"),
    ("net_dropout=1.5", r"'net_dropout' = 1.5: Input should be less than 1"),
])
def test_bad_values_are_one_line_errors_at_load_time(setting, message):
    with pytest.raises(KitError, match=message) as err:
        _load("transformer_dcn_small", setting)
    assert "\n" not in str(err.value) and "transformer_dcn_small.yaml" in str(err.value)


def test_din_keys_are_typed_too():
    with pytest.raises(KitError, match=r"'dnn_activations' = 'tanh'"):
        _load("din_baseline", "dnn_activations=tanh")
    with pytest.raises(KitError, match=r"unknown key\(s\) \['n_heads'\] for model 'din'"):
        _load("din_baseline", "n_heads=4")  # a transformer key is not a DIN key
    with pytest.raises(KitError, match="unknown model 'xgboost'"):
        _load("din_baseline", "model=xgboost")


def test_yaml_number_forms_parse_as_numbers(tmp_path):
    cfg = _load("din_baseline", "embedding_regularizer=1e-5", "learning_rate=5E-4")
    assert cfg.train.embedding_regularizer == 1e-5 and cfg.train.learning_rate == 5e-4
    f = tmp_path / "c.yaml"
    f.write_text("model: din\nlearning_rate: 1e-3\nnet_regularizer: 2e-7\n")  # YAML 1.1 reads these as str
    cfg = load_config(f)
    assert cfg.train.learning_rate == 1e-3 and cfg.train.net_regularizer == 2e-7
    assert isinstance(cfg.net, DINConfig)


def test_sections_and_flat_views():
    cfg = _load("transformer_dcn_small", "max_epochs=3", "device=cpu")
    assert isinstance(cfg, RunConfig) and isinstance(cfg.net, TransformerDCNConfig)
    assert cfg.runtime.max_epochs == 3 and cfg.runtime.device == "cpu" and cfg["d_model"] == 64
    learned = model_config(cfg)
    assert learned["model"] == "transformer_dcn" and "d_model" in learned and "learning_rate" in learned
    assert not set(RUNTIME_KEYS) & set(learned)
    assert set(cfg.to_flat()) == set(learned) | set(RUNTIME_KEYS)
    assert set(RUNTIME_KEYS) == {"device", "amp", "compile", "max_epochs", "eval_batch_size", "num_threads",
                                 "log_every"}
    with pytest.raises(KitError, match="learning_rate"):
        cfg.replace("train", learning_rate=-1.0)


def test_din_baseline_has_the_organisers_tuner_values():
    cfg = load_config("din_baseline")
    assert (cfg.train.batch_size, cfg.net.net_dropout, cfg.train.embedding_regularizer,
            cfg.train.net_regularizer, cfg.train.learning_rate) == (8192, 0.1, 1e-6, 0.0, 1e-3)
    assert cfg.net.model_dump() == {**DINConfig().model_dump(), "net_dropout": 0.1}


def test_din_init_follows_fuxictr(tiny_data):
    tags, emb = read_item_info(tiny_data / C.ITEM_INFO.relpath)
    torch.manual_seed(0)
    model = create_model(load_config("din_baseline"), torch.from_numpy(tags), torch.from_numpy(emb))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for m in linears:
        if m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0
        fan_in, fan_out = m.weight.shape[1], m.weight.shape[0]
        xavier = (2.0 / (fan_in + fan_out)) ** 0.5
        assert m.weight.std().item() == pytest.approx(xavier, rel=0.2)  # PyTorch's default is ~1/sqrt(3 fan_in)
    for emb_table in (model.likes, model.views, model.items.id_emb, model.items.tag_emb):
        assert emb_table.weight.std().item() < 2e-4


def test_cli_device_foo_is_one_line(tiny_data, tmp_path, capsys):
    from task2.cli import main

    rc, _, err = kit_cli(capsys, main, "train", "--data-dir", tiny_data, "--device", "foo", "--config", "din_baseline",
                         "--out", tmp_path / "r")
    assert rc == 2 and err.startswith("error: ") and "'device' = 'foo'" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("key", ["batch_norm", "amp", "compile"])
def test_bool_keys_in_a_yaml_file_refuse_yaml11_words(tmp_path, key):
    f = tmp_path / "c.yaml"
    f.write_text(f"model: transformer_dcn\n{key}: yes\n")
    with pytest.raises(KitError, match=rf"c\.yaml: config key '{key}' = 'yes': .*valid boolean; use true or false"):
        load_config(f)
    f.write_text((ROOT / "task2/configs/din_baseline.yaml").read_text().replace("batch_norm: true", "batch_norm: No"))
    with pytest.raises(KitError, match=r"config key 'batch_norm' = 'No': .*valid boolean; use true or false"):
        load_config(f)

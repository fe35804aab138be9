"""task2 main model quality levers: ablation switches, the id parameter group; and the full model learns the
planted signal."""
import pytest
import torch

from mmctr import contract as C
from mmctr.paths import DataPaths
from task2.config import load_config, parse_overrides
from task2.data import ItemTable, load_split
from task2.models import create_model
from task2.train import train_model

# switch -> state_dict key prefix that must be gone when it is off
ABLATIONS = {
    "n_layers=0": "encoder.",
    "cross_layers=0": "cross.layers.",
    "code_sizes=[]": "items.code_embs.",
}


@pytest.fixture(scope="module")
def tiny_tables(tiny_data):
    paths = DataPaths.resolve(tiny_data)
    items = ItemTable.load(paths.require(C.ITEM_INFO))
    train = load_split(paths.require(C.TRAIN), 24, items.n_items, need_label=True)
    return items, train


def one_step(sets, items, train):
    """Build the small model with `sets`, take one Adam step on 256 train rows."""
    torch.manual_seed(0)
    cfg = load_config("transformer_dcn_small", parse_overrides(sets))
    model = create_model(cfg, items.tags, items.emb)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = train.batch(torch.arange(256))
    model.train()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch["label"])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return model, before, loss


@pytest.mark.parametrize("switch", list(ABLATIONS))
def test_each_switch_builds_and_trains_one_step(switch, tiny_tables):
    items, train = tiny_tables
    model, before, loss = one_step([switch], items, train)
    assert torch.isfinite(loss)
    keys = set(model.state_dict())
    assert not any(k.startswith(ABLATIONS[switch]) for k in keys), switch
    full = set(create_model(load_config("transformer_dcn_small"), items.tags, items.emb).state_dict())
    assert any(k.startswith(ABLATIONS[switch]) for k in full)
    changed = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert "head.weight" in changed
    assert "items.id_emb.weight" in changed
    assert [p.data_ptr() for p in model.id_parameters()] == [model.items.id_emb.weight.data_ptr()]


def test_defaults_keep_the_parameter_names_of_existing_checkpoints(tiny_tables):
    items, _ = tiny_tables
    keys = set(create_model(load_config("transformer_dcn_small"), items.tags, items.emb).state_dict())
    for name in ("items.id_emb.weight", "items.mm_proj.weight", "items.code_embs.0.weight",
                 "encoder.layers.0.self_attn.in_proj_weight", "target_attn.in_proj_weight", "cross.layers.0.weight"):
        assert name in keys


def test_full_model_beats_chance_on_the_planted_signal(tiny_data, tmp_path):
    cfg = load_config("transformer_dcn_small", {"batch_size": 256, "max_epochs": 2, "num_threads": 1})
    summary = train_model(cfg, tiny_data, None, tmp_path / "run", quiet=True)
    assert summary["best_valid_auc"] > 0.6

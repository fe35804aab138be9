"""task2 main model quality levers: ablation switches, quadratic-interest sequence features, the
id parameter group; and the full model learns the planted signal. (id_dropout: test_task2_models.py)"""
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
    "use_target_attention=false": "target_attn.",
    "cross_layers=0": "cross.layers.",
    "code_sizes=[]": "items.code_embs.",
    "use_mm=false": "items.mm_proj.",
    "use_id_embedding=false": "items.id_emb.",
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


@pytest.mark.parametrize("switch", list(ABLATIONS) + ["id_dropout=0.5", "seq_features=true"])
def test_each_switch_builds_and_trains_one_step(switch, tiny_tables):
    items, train = tiny_tables
    model, before, loss = one_step([switch], items, train)
    assert torch.isfinite(loss)
    keys = set(model.state_dict())
    if switch in ABLATIONS:
        assert not any(k.startswith(ABLATIONS[switch]) for k in keys), switch
        full = set(create_model(load_config("transformer_dcn_small"), items.tags, items.emb).state_dict())
        assert any(k.startswith(ABLATIONS[switch]) for k in full)
    changed = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert "head.weight" in changed
    if switch != "use_id_embedding=false":
        assert "items.id_emb.weight" in changed
        assert [p.data_ptr() for p in model.id_parameters()] == [model.items.id_emb.weight.data_ptr()]
    else:
        assert model.id_parameters() == []


def test_defaults_keep_the_parameter_names_of_existing_checkpoints(tiny_tables):
    items, _ = tiny_tables
    keys = set(create_model(load_config("transformer_dcn_small"), items.tags, items.emb).state_dict())
    for name in ("items.id_emb.weight", "items.mm_proj.weight", "items.code_embs.0.weight",
                 "encoder.layers.0.self_attn.in_proj_weight", "target_attn.in_proj_weight", "cross.layers.0.weight"):
        assert name in keys


def test_quadratic_interest_pools_target_item_dot_products_over_valid_positions():
    cfg = load_config("transformer_dcn_small", parse_overrides(["seq_features=true"])).net
    tags = torch.ones(11, 2, dtype=torch.long)
    model = create_model(load_config("transformer_dcn_small", parse_overrides(["seq_features=true"])),
                         tags, torch.randn(11, 128))
    h, dm = cfg.n_heads, cfg.d_model
    t = torch.randn(2, dm)
    s = torch.randn(2, 3, dm)
    mask = torch.tensor([[False, True, True], [True, True, True]])
    out = model.quadratic_interest(t, s, mask)
    assert out.shape == (2, 3 * h + 1)
    dots = (s.view(2, 3, h, -1) * t.view(2, 1, h, -1)).sum(-1) / (dm // h) ** 0.5
    assert torch.allclose(out[0, :h], dots[0, 1:].mean(0), atol=1e-5)  # padding left out of the mean
    assert torch.allclose(out[0, h:2 * h], dots[0, 1:].amax(0), atol=1e-5)
    assert torch.allclose(out[:, 2 * h:3 * h], dots[:, -1], atol=1e-5)  # most recent = last column
    assert torch.allclose(out[:, -1], torch.log1p(torch.tensor([2.0, 3.0])))
    s2 = s.clone()
    s2[0, 0] = 1e3  # whatever sits at a padded position changes nothing
    assert torch.allclose(model.quadratic_interest(t, s2, mask), out)
    empty = model.quadratic_interest(t, s, torch.zeros(2, 3, dtype=torch.bool))
    assert torch.isfinite(empty).all() and (empty == 0).all()


def test_full_model_beats_chance_on_the_planted_signal(tiny_data, tmp_path):
    cfg = load_config("transformer_dcn_small", {"batch_size": 256, "max_epochs": 2, "num_threads": 2})
    summary = train_model(cfg, tiny_data, None, tmp_path / "run", quiet=True)
    assert summary["best_valid_auc"] > 0.6

"""transformer_dcn `design: momo`: the rank-1 solution's shape as a config of the kit's model, and its two masks."""
import pytest
import torch

from mmctr import contract as C
from mmctr.item_info import read_item_info
from task2.config import load_config
from task2.models import create_model
from task2.models.layers import LastKTransformer
from task2.train import train_model

SMALL = {"embedding_dim": 8, "tag_dim": 8, "mm_dim": 16, "ff_dim": 32, "last_k": 4, "cross_layers": 1,
         "dnn_hidden_units": [32], "head_hidden_units": [8]}


def _model(tiny_data, **sets):
    tags, emb = read_item_info(tiny_data / C.ITEM_INFO.relpath)
    return create_model(load_config("transformer_dcn_momo", {**SMALL, **sets}), torch.from_numpy(tags.copy()),
                        torch.from_numpy(emb.copy()))


def test_momo_config_is_the_winners_shape(tiny_data):
    cfg = load_config("transformer_dcn_momo")
    assert ((cfg.net.design, cfg.train.batch_size, cfg.train.learning_rate, cfg.net.batch_norm)
            == ("momo", 128, 5e-4, False))
    model = _model(tiny_data)
    width = 2 * (8 + 8 + 16)  # [item ; target], item = id + tags + projected embedding
    assert model.momo.out_dim == (4 + 1) * width
    assert model.cross.layers[0].in_features == 2 * 8 + width // 2 + 5 * width  # likes, views, target, seq
    assert not any(k.startswith(("pos.", "target_attn.", "pair_proj.")) for k in model.state_dict())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    b, length = 6, 24
    batch = {"seq": torch.randint(0, 50, (b, length)), "item": torch.randint(1, 50, (b,)),
             "likes": torch.randint(0, 11, (b,)), "views": torch.randint(0, 11, (b,))}
    assert model(batch).shape == (b,)


def test_kit_design_keeps_its_modules(tiny_data):
    tags, emb = read_item_info(tiny_data / C.ITEM_INFO.relpath)
    model = create_model(load_config("transformer_dcn_small"), torch.from_numpy(tags.copy()),
                         torch.from_numpy(emb.copy()))
    keys = set(model.state_dict())
    assert {"head.weight", "pos.weight", "pair_proj.weight"} <= keys and model.momo is None


def _block(as_run: bool):
    torch.manual_seed(0)
    return LastKTransformer(8, 1, 16, 0.0, 2, k=3, as_run=as_run).eval()


def test_as_run_mask_attends_only_to_padding():
    t = torch.randn(2, 4)
    s = torch.randn(2, 5, 4)
    s[0, :2] = 0  # row 0: 2 padding positions, 3 real items; row 1: full
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, :2] = False
    other = s.clone()
    other[0, 2:] = torch.randn(3, 4)  # row 0: other real items
    other[1, :4] = torch.randn(4, 4)  # row 1: other items except the most recent
    as_run = _block(True)
    with torch.no_grad():
        torch.testing.assert_close(as_run(t, s, mask), as_run(t, other, mask))  # real items never read
        out = as_run(t, s, mask)
    width = 8
    assert out[0, :3 * width].abs().sum() == 0  # the last 3 positions of row 0 are real items: zeroed
    corrected = _block(False)
    with torch.no_grad():
        assert not torch.allclose(corrected(t, s, mask)[0], corrected(t, other, mask)[0])
        padded = s.clone()
        padded[0, :2] = torch.randn(2, 4)  # what sits at padding positions is never read
        torch.testing.assert_close(corrected(t, s, mask), corrected(t, padded, mask))


def test_momo_learns_the_planted_signal(tiny_data, tmp_path):
    sets = {**SMALL, "batch_size": 256, "learning_rate": 2e-3, "num_threads": 1, "device": "cpu"}
    for mask in ("corrected", "as_run"):
        cfg = load_config("transformer_dcn_momo", {**sets, "momo_mask": mask})
        s = train_model(cfg, tiny_data, None, tmp_path / mask, max_epochs=2, quiet=True)
        assert s["best_valid_auc"] > 0.65, mask


def test_momo_mask_is_checked():
    from mmctr.errors import KitError

    with pytest.raises(KitError, match="momo_mask"):
        load_config("transformer_dcn_momo", {"momo_mask": "sideways"})

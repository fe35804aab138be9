"""task2 model options: id-embedding dropout acts in training only; mm_rank keeps the top principal axes."""
import torch

from mmctr import contract as C
from mmctr.item_info import read_item_info
from task2.config import load_config
from task2.models import create_model


def test_id_dropout_drops_whole_id_vectors_in_training_only(tiny_data):
    tags, emb = read_item_info(tiny_data / C.ITEM_INFO.relpath)
    model = create_model(load_config("transformer_dcn_small", {"id_dropout": 0.5}),
                         torch.from_numpy(tags.copy()), torch.from_numpy(emb.copy()))
    items = model.items
    ids = torch.arange(1, 201)
    d = items.id_emb.embedding_dim
    torch.manual_seed(0)
    items.train()
    dropped = (items(ids)[:, :d] == 0).all(1).float().mean()
    assert 0.35 < dropped < 0.65
    items.eval()
    torch.testing.assert_close(items(ids)[:, :d], items.id_emb(ids))


def _model(tiny_data, **sets):
    tags, emb = read_item_info(tiny_data / C.ITEM_INFO.relpath)
    return create_model(load_config("transformer_dcn_small", sets), torch.from_numpy(tags.copy()),
                        torch.from_numpy(emb.copy())), emb


def test_mm_rank_keeps_the_top_principal_axes_of_the_frozen_embedding(tiny_data):
    model, emb = _model(tiny_data, mm_rank=8)
    x = torch.from_numpy(emb[1:]).double()
    x -= x.mean(0)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    want = u[:, :8] * s[:8]
    got = model.items.frozen(torch.arange(1, len(emb))).double()
    torch.testing.assert_close(got.abs(), want.abs(), atol=1e-3, rtol=1e-3)  # axes up to sign
    assert float(model.items.frozen(torch.tensor([0])).abs().sum()) == 0.0  # padding stays 0
    assert model.items.mm_proj.in_features == 8
    assert {"items.mm_center", "items.mm_axes"} <= set(model.state_dict())  # saved, never re-derived


def test_mm_rank_variances_and_its_range(tiny_data):
    import pytest

    from mmctr.errors import KitError

    model, emb = _model(tiny_data, mm_rank=4)
    z = torch.from_numpy(emb[1:]).double()
    top = torch.linalg.eigvalsh(torch.cov(z.T)).flip(0)[:4]
    got = model.items.frozen(torch.arange(1, len(emb))).double()
    torch.testing.assert_close(got.var(0), top, rtol=1e-3, atol=1e-4)  # variances = top eigenvalues
    with pytest.raises(KitError, match="mm_rank"):
        load_config("transformer_dcn_small", {"mm_rank": C.EMB_DIM + 1})

"""task2 model options: id-embedding dropout acts in training only."""
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

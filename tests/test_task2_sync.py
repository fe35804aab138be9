"""task2's sync-free training step: the GPU paths agree with the CPU ones; on a GPU no step syncs."""
import pytest
import torch

from mmctr import contract as C
from mmctr.item_info import read_item_info
from task2.config import load_config
from task2.data import iter_batches, load_split
from task2.models import create_model
from task2.models.layers import TargetAttention
from task2.train import Trainer, _LossMeter


def test_dense_attention_equals_sparse():
    torch.manual_seed(0)
    att = TargetAttention(8, [16], dropout=0.0, use_softmax=False).eval()
    target, seq = torch.randn(5, 8), torch.randn(5, 7, 8)
    mask = torch.rand(5, 7) > 0.4
    torch.testing.assert_close(att(target, seq, mask, dense=True), att(target, seq, mask, dense=False))


def test_encode_without_dedup_equals_dedup(tiny_data):
    tags, emb = read_item_info(tiny_data / C.ITEM_INFO.relpath)
    cfg = load_config("transformer_dcn_small")
    model = create_model(cfg, torch.from_numpy(tags.copy()), torch.from_numpy(emb.copy())).eval()
    target, seq = torch.tensor([3, 4, 3]), torch.tensor([[0, 3, 5], [4, 4, 2], [0, 0, 9]])
    a = model.items.encode(target, seq, model.item_proj, dedup=True)
    b = model.items.encode(target, seq, model.item_proj, dedup=False)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_batch_trim_width_comes_from_cpu_lengths(tiny_data):
    split = load_split(tiny_data / C.VALID.relpath, 24, 300, need_label=True)
    for idx in iter_batches(len(split), 64, shuffle=False):
        seq = split.batch(idx)["seq"]
        full = split.seq[idx]
        kept = full[:, full.shape[1] - seq.shape[1]:]
        assert torch.equal(seq, kept.long()) and int(full[:, :full.shape[1] - seq.shape[1]].abs().sum()) == 0
        assert seq.shape[1] == 1 or bool((seq[:, 0] != 0).any())  # no all-padding column left


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["transformer_dcn_small", "din_baseline"])
def test_training_steps_do_not_sync_on_gpu(tiny_data, tmp_path, name):
    trainer = Trainer(load_config(name, {"batch_size": 256, "max_epochs": 1, "device": "cuda"}),
                      tiny_data, None, tmp_path / "r", quiet=True)
    batches = iter_batches(len(trainer.train), 256, generator=trainer.gen, lengths=trainer.train.lengths)
    trainer.model.train()
    trainer.train_step(trainer.train.batch(batches[0]))  # warm-up: lazy optimiser state, cuBLAS handles
    torch.cuda.synchronize()
    meter = _LossMeter(trainer.dev)
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = []
        for step, idx in enumerate(batches[1:6]):
            losses.append(trainer.train_step(trainer.train.batch(idx)))
            meter.add(losses[-1], len(idx), step)  # what train_epoch does between validations
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(torch.stack(losses)).tolist())
    assert meter.close(0, 1e-3)[1] == sum(len(idx) for idx in batches[1:6])

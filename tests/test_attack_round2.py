"""Round-2 attack probes: a crafted last.pt (`plateaued` of a wrong type, sha re-pinned) must
fail as one KitError line on --resume, not as a traceback or a silently flipped flag."""
import json

import pytest
import torch

from mmctr.errors import KitError
from mmctr.io import file_sha256
from task2.config import load_config
from task2.train import Trainer

ONE_EVAL = {"batch_size": 512, "max_epochs": 2, "num_threads": 1, "lr_anneal_after_plateau": True}


@pytest.mark.parametrize("bad", ["false", 0, torch.tensor([True, False])])
def test_resume_refuses_a_plateaued_flag_that_is_not_a_bool(bad, tiny_data, tmp_path):
    cfg = load_config("transformer_dcn_small", ONE_EVAL)
    run = tmp_path / "r"
    t = Trainer(cfg, tiny_data, None, run, quiet=True)
    t.train_seconds, t.samples_per_s, t.epoch_generator = 1.0, [1.0], t.gen.get_state()
    t.checkpoint_and_earlystop(0, 1, 1, 0.7, 0.6)
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["plateaued"] is False
    state["plateaued"] = bad
    torch.save(state, run / "last.pt")
    m = json.loads((run / "manifest.json").read_text())
    m["last_checkpoint"]["sha256"] = file_sha256(run / "last.pt")  # re-pinned: only the check stands
    (run / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(KitError, match=r"plateaued"):
        Trainer(cfg, tiny_data, None, run, quiet=True, resume=True)

"""open_clip towers resolved by (architecture, pretrained tag): preprocessing mean/std and QuickGELU
come from the tag, not from the checkpoint file. Random-init checkpoints of the real architecture
names shrunk to a tiny size (open_clip's config registry patched), nothing downloaded."""
from __future__ import annotations

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
from open_clip import factory  # noqa: E402

from mmctr.errors import KitError  # noqa: E402
from task1 import weights as weights_mod  # noqa: E402
from task1.config import load_config  # noqa: E402
from task1.encoders import image as image_enc  # noqa: E402

TINY = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
OPENAI_MEAN = list(open_clip.OPENAI_DATASET_MEAN)


@pytest.fixture
def tiny_archs(monkeypatch):
    for arch in ("ViT-B-32", "ViT-L-14"):
        monkeypatch.setitem(factory._MODEL_CONFIGS, arch, {**TINY, "vision_cfg": dict(TINY["vision_cfg"]),
                                                           "text_cfg": dict(TINY["text_cfg"])})
    torch.set_num_threads(1)


def _checkpoint(tmp_path, arch: str):
    model = open_clip.create_model(arch, pretrained=None)
    path = tmp_path / f"{arch}.bin"
    torch.save(model.state_dict(), path)
    return path


def _activations(model):
    return {type(m).__name__ for m in model.visual.modules()}


@pytest.mark.parametrize("arch,tag,mean,quick", [
    ("ViT-L-14", "laion2b_s32b_b82k", [0.5, 0.5, 0.5], False),
    ("ViT-L-14", "openai", OPENAI_MEAN, True),
    ("ViT-B-32", "laion2b_s34b_b79k", OPENAI_MEAN, False),
    ("ViT-B-32", "openai", OPENAI_MEAN, True),
])
def test_tag_decides_mean_std_and_quickgelu(tiny_archs, tmp_path, arch, tag, mean, quick):
    ckpt = _checkpoint(tmp_path, arch)
    w = weights_mod.resolve_image(arch, str(ckpt), tag)
    assert w.pretrained == tag and w.model_id() == f"open_clip:{arch}/{tag}"
    assert w.preprocess["mean"] == pytest.approx(mean) and w.preprocess["quick_gelu"] is quick
    entry = w.manifest_entry()
    assert entry["pretrained"] == tag and entry["preprocess"]["std"] == w.preprocess["std"]
    model = image_enc.load_open_clip(w)
    assert ("QuickGELU" in _activations(model)) is quick
    assert ("GELU" in _activations(model)) is not quick
    tower = image_enc.load_tower(w)
    torch.testing.assert_close(tower.mean.flatten() / 255, torch.tensor(mean))
    torch.testing.assert_close(tower.std.flatten() / 255, torch.tensor(w.preprocess["std"]))
    # the loaded weights are the checkpoint's, not a fresh init
    ref = torch.load(ckpt, weights_only=True)
    torch.testing.assert_close(model.state_dict()["visual.conv1.weight"], ref["visual.conv1.weight"])


def test_tags_are_required_known_and_kept_in_config(tiny_archs, tmp_path):
    ckpt = _checkpoint(tmp_path, "ViT-B-32")
    with pytest.raises(KitError, match=r"needs image.pretrained.*openai"):
        weights_mod.resolve_image("ViT-B-32", str(ckpt))
    with pytest.raises(KitError, match=r"'laion9000' is not a tag of open_clip 'ViT-B-32'; known: openai"):
        weights_mod.resolve_image("ViT-B-32", str(ckpt), "laion9000")
    with pytest.raises(KitError, match=r"takes none"):
        weights_mod.resolve_image("efficientnet-lite0", None, "openai")
    # a tag whose HF repo is not in the local cache and no checkpoint: a clear error, no download
    with pytest.raises(KitError, match=r"needs image.checkpoint.*nothing is downloaded"):
        weights_mod.resolve_image("ViT-B-32", None, "laion2b_s34b_b79k")
    cfg = load_config("default", {"image": {"model": "ViT-L-14", "pretrained": "laion2b_s32b_b82k",
                                            "checkpoint": str(ckpt)}})
    assert cfg.dump()["image"]["pretrained"] == "laion2b_s32b_b82k"


def test_a_wrong_checkpoint_for_the_arch_is_one_error(tiny_archs, tmp_path):
    ckpt = _checkpoint(tmp_path, "ViT-B-32")
    sd = torch.load(ckpt, weights_only=True)
    sd["visual.conv1.weight"] = torch.zeros(3, 3)
    torch.save(sd, ckpt)
    w = weights_mod.resolve_image("ViT-B-32", str(ckpt), "openai")
    with pytest.raises(KitError, match=r"cannot load open_clip 'ViT-B-32' \(openai\)"):
        image_enc.load_open_clip(w)

"""Cover images -> embeddings: EfficientNet-Lite0 (bundled, offline default) or any open_clip tower.

Decoding runs in DataLoader workers through mmctr.images.open_cover (PIL draft decode, pixel
and aspect guards: one hostile cover cannot take GBs), then a shorter-side resize and a centre
crop give uint8 tensors; normalisation happens on the device with the tower's own mean/std
(for open_clip: those of its pretrained tag). On CUDA the tower runs channels_last under
bf16/fp16 autocast. A missing, corrupt or oversized image yields no vector; its status says
which and build.py applies the documented fallback.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.images import CoverError, open_cover

from ..weights import Weights

MISSING, UNREADABLE, OK = 0, 1, 2
PREPROCESS_VERSION = 2  # part of the cache key: 2 = open_cover decode
DRAFT_ASPECT = 2  # covers up to 2:1 keep the full resolution for the shorter side


class CoverDataset(Dataset):
    """Item i -> (uint8 CHW tensor, status) with status OK, MISSING or UNREADABLE."""

    def __init__(self, image_dir, item_ids, size: int, resize: int):
        self.dir = Path(image_dir)
        self.ids = np.asarray(item_ids)
        self.size, self.resize = int(size), int(resize)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        path = self.dir / C.image_name(self.ids[i])
        blank = torch.zeros(3, self.size, self.size, dtype=torch.uint8)
        if not path.exists():
            return blank, MISSING
        try:
            img = open_cover(path, DRAFT_ASPECT * self.resize)
            w, h = img.size
            s = self.resize / min(w, h)
            img = img.resize((max(self.size, round(w * s)), max(self.size, round(h * s))), Image.BICUBIC)
            w, h = img.size
            left, top = (w - self.size) // 2, (h - self.size) // 2
            img = img.crop((left, top, left + self.size, top + self.size))
            arr = np.asarray(img, dtype=np.uint8).copy()
        except (CoverError, OSError, ValueError, Image.DecompressionBombError):
            return blank, UNREADABLE
        return torch.from_numpy(arr).permute(2, 0, 1), OK


class Tower(torch.nn.Module):
    """uint8 images on the device -> float features."""

    def __init__(self, net, forward, mean, std, size: int, resize: int, dim: int):
        super().__init__()
        self.net, self._forward, self.size, self.resize, self.dim = net, forward, size, resize, dim
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, x_uint8):
        x = (x_uint8.float() - self.mean) / self.std
        return self._forward(x.contiguous(memory_format=torch.channels_last))


def _effnet_state_dict(path: Path, target: dict) -> dict:
    """Map the lukemelas-style EfficientNet-Lite0 state dict (`_conv_stem`, `_blocks.N...`,
    `_fc`) onto timm's tf_efficientnet_lite0 by order and shape (both list 296 tensors in the
    same module order; `_fc` -> `classifier`). Verified on real photos: see docs/task1.md."""
    try:
        src = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise KitError(f"cannot read image weights {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(src, dict) and "state_dict" in src:
        src = src["state_dict"]
    if not isinstance(src, dict) or len(src) != len(target):
        raise KitError(f"image weights {path} are not an EfficientNet-Lite0 state dict "
                       f"({len(src) if isinstance(src, dict) else type(src).__name__} tensors, "
                       f"expected {len(target)})")
    out = {}
    for (k_src, v), (k_dst, ref) in zip(src.items(), target.items()):
        if tuple(v.shape) != tuple(ref.shape):
            raise KitError(f"image weights {path}: tensor {k_src} {tuple(v.shape)} does not fit "
                           f"{k_dst} {tuple(ref.shape)}")
        out[k_dst] = v
    return out


def load_tower(weights: Weights, image_size=None) -> Tower:
    if weights.family == "efficientnet-lite0":
        import timm

        net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        net.load_state_dict(_effnet_state_dict(weights.path, net.state_dict()))
        net.reset_classifier(0)  # 1280-D pooled features
        cfg = net.pretrained_cfg
        size = int(image_size or cfg["input_size"][-1])
        resize = int(round(size / cfg["crop_pct"]))
        return Tower(net, net, cfg["mean"], cfg["std"], size, resize, net.num_features)
    if weights.family == "open_clip":
        model = load_open_clip(weights)
        visual = model.visual
        mean, std = weights.preprocess["mean"], weights.preprocess["std"]
        native = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
        size = int(image_size or native)
        dim = getattr(visual, "output_dim", None) or model.text_projection.shape[-1]
        return Tower(visual, visual, mean, std, size, size, int(dim))
    raise KitError(f"no image tower for model family '{weights.family}'")


def load_open_clip(weights: Weights):
    """The open_clip model of (arch, pretrained tag) with the weights file loaded: QuickGELU and
    the preprocessing mean/std come from the tag (a checkpoint file alone carries neither)."""
    import open_clip

    pre = weights.preprocess
    try:
        model = open_clip.create_model(
            weights.arch, pretrained=None, force_quick_gelu=bool(pre["quick_gelu"]),
            force_preprocess_cfg={"mean": tuple(pre["mean"]), "std": tuple(pre["std"])})
        open_clip.load_checkpoint(model, str(weights.path), weights_only=True)
    except Exception as exc:  # noqa: BLE001  any load failure is the user's file or tag
        raise KitError(f"cannot load open_clip '{weights.arch}' ({weights.pretrained}) from {weights.path}: "
                       f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    return model.eval()


def _autocast_dtype(precision: str, device: torch.device):
    if device.type != "cuda":
        return None if precision in ("auto", "fp32") else torch.bfloat16
    return {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def encode(image_dir, item_ids, weights: Weights, cfg, device: str, progress: bool = True):
    """cfg: ImageCfg. Returns (features (n, d) float32 L2-normalised, status (n,) int8: OK/MISSING/UNREADABLE).
    Rows whose status is not OK are zero."""
    dev = torch.device(device)
    tower = load_tower(weights, cfg.image_size).to(dev).eval()
    tower = tower.to(memory_format=torch.channels_last)
    dtype = _autocast_dtype(cfg.precision, dev)
    ds = CoverDataset(image_dir, item_ids, tower.size, tower.resize)
    from task1.config import usable_cores

    # no idle workers on tiny sets, and no more than 4 per usable core
    workers = min(cfg.workers, max(1, len(ds) // max(cfg.batch_size, 1)), 4 * usable_cores())
    dl = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False,
                    num_workers=workers if cfg.workers else 0, pin_memory=dev.type == "cuda",
                    persistent_workers=False, prefetch_factor=4 if cfg.workers else None)
    feats = np.zeros((len(ds), tower.dim), dtype=np.float32)
    status = np.zeros(len(ds), dtype=np.int8)
    pos = 0
    with torch.inference_mode():
        for x, st in tqdm(dl, desc="images", unit="batch", disable=not progress):
            x = x.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                f = tower(x)
            f = torch.nn.functional.normalize(f.float(), dim=-1)
            ok = st == OK
            f[ok.to(dev).logical_not()] = 0
            feats[pos:pos + len(x)] = f.cpu().numpy()
            status[pos:pos + len(x)] = st.numpy()
            pos += len(x)
    return feats, status

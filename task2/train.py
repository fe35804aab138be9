"""One training loop: train → validate each epoch → keep the best → stop early.

Single process by default; under `torchrun --nproc_per_node=N -m task2 train ...` it runs DDP
(each rank a share of every epoch, rank 0 validates, checkpoints and writes the manifest).
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.io import Timer, atomic_path, file_sha256
from mmctr import manifest as M
from mmctr.manifest import hash_inputs, write_manifest
from mmctr.metrics import log_loss, roc_auc
from mmctr.paths import DataPaths

from .config import model_config
from .data import ItemTable, Split, iter_batches, load_split
from .models import create_model

BEST, LAST, HISTORY = "best.pt", "last.pt", "history.jsonl"
MANIFEST = M.TASK2_MANIFEST
# FuxiCTR 2.3.7 (rank_model.py): an epoch "improves" only by more than 1e-6; lr never below 1e-6.
MIN_DELTA, MIN_LR = 1e-6, 1e-6


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KitError(f"device '{name}' asked for, but no CUDA GPU is visible (use --device cpu)")
    return torch.device(name)


class Dist:
    """DDP state from torchrun's environment; world=1 means a plain single-process run."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = device
        if self.world > 1:
            import torch.distributed as dist

            local = int(os.environ.get("LOCAL_RANK", "0"))
            if device.type == "cuda":
                self.device = torch.device("cuda", local)
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def broadcast_flag(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([int(flag)], device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(t, 0)
        return bool(t.item())

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def predict_split(model: torch.nn.Module, split: Split, batch_size: int, device: torch.device,
                  amp: bool) -> np.ndarray:
    """Click probabilities for every row of `split`, in row order."""
    model.eval()
    out = []
    for idx in iter_batches(len(split), batch_size, shuffle=False, device=split.item.device):
        batch = {k: v.to(device, non_blocking=True) for k, v in split.batch(idx).items() if k != "label"}
        with autocast(device, amp):
            out.append(torch.sigmoid(model(batch).float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def regularization(model, cfg) -> torch.Tensor | float:
    """FuxiCTR 2.3.7 L2 terms, (lambda/2)*||w||^2: embedding_regularizer on embedding tables,
    net_regularizer on the other weight matrices."""
    emb_params = list(model.embedding_parameters())
    reg = 0.0
    if cfg["embedding_regularizer"]:
        reg = reg + cfg["embedding_regularizer"] / 2 * sum(p.pow(2).sum() for p in emb_params)
    if cfg["net_regularizer"]:
        ids = {id(p) for p in emb_params}
        net = [p for n, p in model.named_parameters() if p.dim() > 1 and id(p) not in ids]
        reg = reg + cfg["net_regularizer"] / 2 * sum(p.pow(2).sum() for p in net)
    return reg


def _save(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_model(cfg, data_dir, item_info_path=None, out_dir="runs/task2", device=None,
                max_epochs: int | None = None, quiet: bool = False, resume: bool = False) -> dict:
    """Train cfg['model'] on train.parquet, select on valid AUC; return the run's summary.

    Writes best.pt, last.pt, history.jsonl and manifest.json into out_dir.
    """
    timer = Timer()
    paths = DataPaths.resolve(data_dir)
    item_info_path = Path(item_info_path) if item_info_path else paths.require(C.ITEM_INFO)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg["num_threads"]:
        torch.set_num_threads(cfg["num_threads"])
    dist = Dist(resolve_device(device or cfg["device"]))
    dev = dist.device
    seed_everything(cfg["seed"])
    epochs = max_epochs or cfg["max_epochs"]
    show = not quiet and dist.main

    with timer("load"):
        items = ItemTable.load(item_info_path)
        train = load_split(paths.require(C.TRAIN), cfg["max_len"], items.n_items, need_label=True)
        valid = load_split(paths.require(C.VALID), cfg["max_len"], items.n_items, need_label=True)
        data_dev = dev if dev.type == "cuda" else torch.device("cpu")
        train, valid = train.to(data_dev), valid.to(data_dev)
    with timer("build"):
        model = create_model(cfg, items.tags.to(dev), items.emb.to(dev)).to(dev)
        n_params = sum(p.numel() for p in model.parameters())
        core = model
        if cfg["compile"]:
            model = torch.compile(model)
        model = dist.wrap(model)
        opt = torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"])

    start_epoch, best_auc, best_epoch, bad_epochs, history = 0, -math.inf, -1, 0, []
    if not resume and dist.main:
        (out / HISTORY).unlink(missing_ok=True)  # a fresh run starts a fresh history
    if resume and (out / LAST).is_file():
        state = torch.load(out / LAST, map_location=dev, weights_only=False)
        core.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, best_auc, best_epoch = state["epoch"] + 1, state["best_auc"], state["best_epoch"]
        bad_epochs, history = state["bad_epochs"], state["history"]
        torch.set_rng_state(state["rng"])
        if show:
            print(f"resumed from {out / LAST} at epoch {start_epoch} (best valid AUC {best_auc:.5f})")

    gen = torch.Generator().manual_seed(cfg["seed"])
    for _ in range(start_epoch):  # keep the shuffling sequence of an uninterrupted run
        for _ in iter_batches(len(train), cfg["batch_size"], generator=gen, lengths=train.lengths):
            pass
    n_steps = math.ceil(len(train) // dist.world / cfg["batch_size"])
    samples_per_s = []
    t_train = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        model.train()
        t0 = time.perf_counter()
        total, count = 0.0, 0
        bar = tqdm(iter_batches(len(train), cfg["batch_size"], generator=gen, device=train.item.device,
                                rank=dist.rank, world=dist.world, lengths=train.lengths),
                   total=n_steps, desc=f"epoch {epoch + 1}/{epochs}", disable=not show, leave=False)
        for step, idx in enumerate(bar):
            batch = {k: v.to(dev, non_blocking=True) for k, v in train.batch(idx).items()}
            with autocast(dev, cfg["amp"]):
                logits = model(batch)
            loss = F.binary_cross_entropy_with_logits(logits.float(), batch["label"])
            full = loss + regularization(core, cfg)
            opt.zero_grad(set_to_none=True)
            full.backward()
            if cfg["grad_clip_norm"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip_norm"])
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            if cfg["log_every"] and step % cfg["log_every"] == 0:
                bar.set_postfix(loss=f"{total / count:.4f}")
        if not count:
            raise KitError(f"train.parquet gave no batch (rows: {len(train)}, batch_size {cfg['batch_size']})")
        if dev.type == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        samples_per_s.append(count * dist.world / train_s)
        improved = False
        if dist.main:
            probs = predict_split(core, valid, cfg["eval_batch_size"], dev, cfg["amp"])
            labels = valid.label.cpu().numpy()
            auc, ll = roc_auc(labels, probs), log_loss(labels, probs)
            improved = auc > best_auc + MIN_DELTA
            row = {"epoch": epoch + 1, "train_loss": total / count, "valid_auc": auc, "valid_logloss": ll,
                   "lr": opt.param_groups[0]["lr"], "train_seconds": round(train_s, 3),
                   "samples_per_s": round(samples_per_s[-1], 1)}
            history.append(row)
            with open(out / HISTORY, "a") as f:
                f.write(json.dumps(row) + "\n")
            if show:
                print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f} valid AUC {auc:.5f} "
                      f"logloss {ll:.4f} ({samples_per_s[-1]:,.0f} samples/s)"
                      + ("  *best*" if improved else ""))
            if improved:
                best_auc, best_epoch, bad_epochs = auc, epoch + 1, 0
                _save(out / BEST, {"model": core.state_dict(), "config": cfg, "epoch": epoch + 1, "valid_auc": auc})
            else:
                bad_epochs += 1
            _save(out / LAST, {"model": core.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                               "best_auc": best_auc, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                               "history": history, "rng": torch.get_rng_state()})
        improved = dist.broadcast_flag(improved)
        stop = dist.broadcast_flag(bad_epochs >= cfg["early_stop_patience"])
        if not improved:  # FuxiCTR: learning rate x0.1 on every epoch without improvement, floor 1e-6
            for g in opt.param_groups:
                g["lr"] = max(g["lr"] * cfg["lr_decay_factor"], MIN_LR)
        if stop:
            if show:
                print(f"early stop: no valid AUC gain for {cfg['early_stop_patience']} epochs")
            break

    timer.seconds["train"] = round(time.perf_counter() - t_train, 3)
    summary = {"best_valid_auc": best_auc, "best_epoch": best_epoch, "history": history,
               "params": n_params, "samples_per_s": float(np.median(samples_per_s)) if samples_per_s else None}
    if dist.main:
        with timer("hash"):
            inputs = hash_inputs([train.path, valid.path, item_info_path])
        info = str(item_info_path.resolve())
        best = {M.PATH: str((out / BEST).resolve()), M.SHA256: file_sha256(out / BEST)} if (out / BEST).is_file() else None
        write_manifest(out / MANIFEST, "task2", **{
            M.CONFIG: model_config(cfg), M.RUNTIME: cfg.runtime.model_dump(),
            M.N_MODELS: 1, M.PRETRAINED: [], M.INPUTS: inputs, M.TIMINGS: timer.seconds,
            M.ITEM_INFO: {M.PATH: info, M.SHA256: inputs[info]}, M.CHECKPOINT: best},
            model=cfg["model"], data_dir=str(paths.root), device=str(dev), world_size=dist.world, **summary)
    dist.close()
    return summary

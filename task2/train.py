"""One training loop: fit → (train_epoch → evaluate → checkpoint_and_earlystop) per epoch.

Single process by default; under `torchrun --nproc_per_node=N -m task2 train ...` it runs DDP
(each rank a share of every epoch, rank 0 validates, checkpoints and writes the manifest).
A training step never reads a value back from the GPU: the loss is summed on the device and
read once per epoch (or per `log_every` steps).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mmctr import contract as C
from mmctr import manifest as M
from mmctr.config import changed_keys
from mmctr.errors import KitError
from mmctr.io import Timer, check_writable, file_sha256
from mmctr.manifest import read_manifest, write_manifest
from mmctr.metrics import log_loss, roc_auc
from mmctr.paths import DataPaths, refuse_data_write

from .checkpoint import load_checkpoint, load_weights, save_checkpoint
from .config import RunConfig
from .data import ItemTable, Split, iter_batches, load_split
from .models import create_model, model_args

BEST, LAST, HISTORY, LOG = "best.pt", "last.pt", "history.jsonl", "train.log"
MANIFEST = M.TASK2_MANIFEST
LAST_CHECKPOINT = "last_checkpoint"  # manifest key: {"path": "last.pt", "sha256"}
DATA_FILES = "data_files"  # manifest key: {path relative to the data root: sha256}
RESUMED = "resumed"  # manifest key: [{"from_epoch", "changed": {key: [old, new]}}]
# FuxiCTR 2.3.7 (rank_model.py): an epoch "improves" only by more than 1e-6; lr never below 1e-6.
MIN_DELTA, MIN_LR = 1e-6, 1e-6
# On --resume these keys may change (they steer what comes next); the others define the model
# or the data order already consumed, and are refused.
RESUMABLE_KEYS = ("learning_rate", "embedding_regularizer", "net_regularizer", "early_stop_patience",
                  "lr_decay_factor", "grad_clip_norm")

log = logging.getLogger("task2.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG this process draws from, as tensors and plain data (checkpoint-safe)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(keys.astype(np.int64)),
             "numpy_pos": int(pos), "numpy_gauss": [int(has_gauss), float(gauss)],
             "python": torch.tensor(internal, dtype=torch.int64), "python_version": version,
             "python_gauss": gauss_next}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    has_gauss, gauss = state["numpy_gauss"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], has_gauss, gauss))
    random.setstate((state["python_version"], tuple(state["python"].tolist()), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(name: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' → a usable torch.device, or one KitError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise KitError(f"device '{name}' is not a device: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise KitError(f"device '{name}' asked for, but no CUDA GPU is visible (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise KitError(f"device '{name}': only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise KitError(f"device '{name}' asked for, but MPS is not available (use --device cpu)")
    return dev


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

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order (plain data)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

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
    for idx in iter_batches(len(split), batch_size, shuffle=False):
        batch = {k: v.to(device, non_blocking=True) for k, v in split.batch(idx).items() if k != "label"}
        with autocast(device, amp):
            out.append(torch.sigmoid(model(batch).float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def regularization(model, cfg: RunConfig) -> torch.Tensor | float:
    """FuxiCTR 2.3.7 L2 terms, (lambda/2)*||w||^2: embedding_regularizer on the embedding set,
    net_regularizer on every other trainable parameter (biases and batch norm included)."""
    emb_params = list(model.embedding_parameters())
    reg = 0.0
    if cfg.train.embedding_regularizer:
        reg = reg + cfg.train.embedding_regularizer / 2 * sum(p.pow(2).sum() for p in emb_params)
    if cfg.train.net_regularizer:
        ids = {id(p) for p in emb_params}
        net = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        reg = reg + cfg.train.net_regularizer / 2 * sum(p.pow(2).sum() for p in net)
    return reg


def relative_to(path: Path, root: Path) -> str | None:
    """`path` relative to `root` (both resolved), or None when it lies outside."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return None


def locate(path: Path, data_root: Path, run_dir: Path) -> dict:
    """A data file recorded without the machine's absolute paths: relative to the data root,
    else relative to the run dir (e.g. task1's item_info beside the run)."""
    rel = relative_to(path, data_root)
    if rel is not None:
        return {M.PATH: rel, "root": "data"}
    return {M.PATH: os.path.relpath(Path(path).resolve(), Path(run_dir).resolve()), "root": "run"}


def resolve_located(entry: dict, data_root: Path, run_dir: Path) -> Path:
    """Inverse of `locate` (older manifests held absolute paths)."""
    p = Path(entry[M.PATH])
    if p.is_absolute():
        return p
    return (Path(data_root) if entry.get("root", "data") == "data" else Path(run_dir)) / p


def setup_log(out: Path, show: bool) -> logging.Handler:
    """Lines to <out>/train.log always, and to stderr unless quiet."""
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    handler = logging.FileHandler(out / LOG, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    if show:
        log.addHandler(logging.StreamHandler(sys.stderr))
    return handler


def eval_marks(n_batches: int, evals: int) -> dict[int, float]:
    """{steps done in the epoch: fraction of the epoch} at which to validate, the last at the end."""
    marks = {}
    for j in range(1, evals + 1):
        marks.setdefault(max(1, round(n_batches * j / evals)), j / evals)
    marks[n_batches] = 1.0
    return marks


def epoch_label(epoch: int, fraction: float) -> int | float:
    """History's `epoch` of a validation: 2 at the end of the second epoch, 1.25 a quarter into it."""
    return epoch + 1 if fraction >= 1.0 else round(epoch + fraction, 4)


class _LossMeter:
    """Sums the BCE loss on the device between two validations; read only when asked."""

    def __init__(self, dev: torch.device):
        self.total = torch.zeros((), device=dev)
        self.first_bad = None
        self.count, self.t0 = 0, time.perf_counter()

    def add(self, loss: torch.Tensor, rows: int, step: int) -> None:
        self.total += loss * rows
        bad = torch.where(torch.isfinite(loss), torch.full_like(loss, math.inf), torch.full_like(loss, float(step)))
        self.first_bad = bad if self.first_bad is None else torch.minimum(self.first_bad, bad)
        self.count += rows

    def read(self) -> float:
        return float(self.total) / max(self.count, 1)

    def close(self, epoch: int, lr: float) -> tuple[float, int]:
        """(mean loss, rows) since the last validation; one KitError if a step's loss was not finite."""
        self.seconds = time.perf_counter() - self.t0
        bad = float(self.first_bad)  # the interval's one read-back
        if math.isfinite(bad):
            raise KitError(f"training diverged: non-finite loss at epoch {epoch + 1}, step {int(bad) + 1} "
                           f"(learning_rate {lr:g}); nothing after the last validation was saved; "
                           "lower learning_rate or check item_info")
        return self.read(), self.count


class Trainer:
    """Holds one run's data, model and optimiser; `fit()` trains it and returns the summary."""

    def __init__(self, cfg: RunConfig, data_dir, item_info_path=None, out_dir="runs/task2",
                 quiet: bool = False, resume: bool = False):
        self.cfg, self.out, self.resume = cfg, Path(out_dir), resume
        self.timer = Timer()
        self.paths = DataPaths.resolve(data_dir)
        refuse_data_write(self.out, self.paths.root, "--out")
        check_writable(self.out, "--out")
        self.item_info_path = Path(item_info_path) if item_info_path else self.paths.require(C.ITEM_INFO)
        if resume and not (self.out / LAST).is_file():
            raise KitError(f"--resume: {self.out / LAST} not found (nothing to resume); "
                           "train without --resume to start a fresh run")
        if cfg.runtime.num_threads:
            torch.set_num_threads(cfg.runtime.num_threads)
        self.dist = Dist(resolve_device(cfg.runtime.device))
        self.dev = self.dist.device
        self.show = not quiet and self.dist.main
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.main:
            if not resume:  # a fresh run leaves nothing of an older run in its folder
                for name in (HISTORY, LOG, BEST, LAST, MANIFEST, C.SUBMISSION_FILE):
                    (self.out / name).unlink(missing_ok=True)
            self.handler = setup_log(self.out, self.show)
        seed_everything(cfg.train.seed)
        self.start_epoch, self.best_auc, self.best_epoch, self.bad_evals = 0, -math.inf, -1, 0
        self.history, self.resumed, self.samples_per_s = [], [], []
        self.checkpoints: dict = {}
        self.resume_at = None  # (generator state at the epoch's start, steps already done)
        self.epoch_generator = None
        self._load_data()
        self._build()
        self.gen = torch.Generator().manual_seed(cfg.train.seed)
        if resume:
            self._resume()

    def _load_data(self) -> None:
        with self.timer("load"):
            self.items = ItemTable.load(self.item_info_path)
            n, max_len = self.items.n_items, self.cfg.train.max_len
            self.train = load_split(self.paths.require(C.TRAIN), max_len, n, need_label=True)
            self.valid = load_split(self.paths.require(C.VALID), max_len, n, need_label=True)
            data_dev = self.dev if self.dev.type == "cuda" else torch.device("cpu")
            self.train, self.valid = self.train.to(data_dev), self.valid.to(data_dev)
        if self.dist.main:
            with self.timer("hash"):
                self.data_files = {}
                self.inputs = {}
                for p in (self.train.path, self.valid.path, self.item_info_path):
                    where, sha = locate(p, self.paths.root, self.out), file_sha256(p)
                    self.inputs[where[M.PATH]] = sha
                    if where["root"] == "data":
                        self.data_files[where[M.PATH]] = sha
                info = locate(self.item_info_path, self.paths.root, self.out)
                self.item_info_entry = {**info, M.SHA256: self.inputs[info[M.PATH]]}  # hashed just above

    def _build(self) -> None:
        with self.timer("build"):
            self.model_args = model_args(self.cfg, self.items.tags)
            self.core = create_model(self.model_args, self.items.tags.to(self.dev), self.items.emb.to(self.dev))
            self.core.to(self.dev)
            self.n_params = sum(p.numel() for p in self.core.parameters())
            model = torch.compile(self.core) if self.cfg.runtime.compile else self.core
            self.model = self.dist.wrap(model)
            self.opt = torch.optim.Adam(self.model.parameters(), lr=self.cfg.train.learning_rate)

    def _resume(self) -> None:
        path = self.out / LAST
        manifest = read_manifest(self.out / MANIFEST) if (self.out / MANIFEST).is_file() else {}
        if not isinstance(manifest, dict):
            raise KitError(f"--resume: {self.out / MANIFEST} is not a run manifest (a JSON object)")
        pinned = self._pinned(manifest, LAST_CHECKPOINT, LAST, "")
        if self.dist.main and manifest.get(M.INPUTS, self.inputs) != self.inputs:
            differ = changed_keys(manifest[M.INPUTS], self.inputs)
            raise KitError(f"--resume: input file(s) {differ} differ from those the run in {self.out} "
                           "started on; resume needs the same data and item_info")
        state = load_checkpoint(path, sha256=pinned, map_location=self.dev)
        old_args = state.get("model_args") or {}
        if old_args.get("model") != self.cfg.model:
            raise KitError(f"--resume: {path} holds model '{old_args.get('model')}', the config asks for "
                           f"'{self.cfg.model}'; use another --out or the same config")
        old_cfg, new_cfg = state.get("config") or {}, self.cfg.learned()
        changed = changed_keys(old_cfg, new_cfg)
        refused = [k for k in changed if k not in RESUMABLE_KEYS]
        if refused:
            raise KitError(f"--resume: key(s) {refused} differ from the run in {self.out} "
                           f"({', '.join(f'{k}: {old_cfg.get(k)!r} -> {new_cfg.get(k)!r}' for k in refused)}); "
                           f"only {', '.join(RESUMABLE_KEYS)} may change on resume")
        load_weights(self.core, state["model"], f"--resume: {path} does not fit this model")
        try:
            self.opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise KitError(f"--resume: {path}'s optimizer state does not fit this model: "
                           f"{str(exc).splitlines()[0]}") from None
        if "learning_rate" in changed:  # apply the new rate; otherwise keep the decayed one
            for g in self.opt.param_groups:
                g["lr"] = self.cfg.train.learning_rate
        if "steps_done" in state:  # stopped after a validation inside an epoch: finish that epoch
            done, gen = state["steps_done"], state.get("epoch_generator")
            if not isinstance(done, int) or done < 1 or not isinstance(gen, torch.Tensor):
                raise KitError(f"--resume: {path} records a position inside epoch {state['epoch'] + 1} "
                               f"that cannot be replayed (steps_done {done!r})")
            self.start_epoch = state["epoch"]
            self.resume_at = (gen, done)
        else:
            self.start_epoch = state["epoch"] + 1
        self.best_auc, self.best_epoch = state["best_auc"], state["best_epoch"]
        self.bad_evals, self.history = state.get("bad_evals", state.get("bad_epochs")), list(state["history"])
        self.resumed = list(state.get("resumed", [])) + [
            {"from_epoch": self.history[-1]["epoch"] if self.history else self.start_epoch,
             "changed": {k: [old_cfg.get(k), new_cfg.get(k)] for k in changed}}]
        self.checkpoints = {k: v for k, v in ((M.CHECKPOINT, manifest.get(M.CHECKPOINT)),
                                              (LAST_CHECKPOINT, manifest.get(LAST_CHECKPOINT))) if v}
        rngs = state["rng"]
        set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
        self.gen.set_state(state["generator"])
        log.info(f"resumed from {path} after epoch {self.resumed[-1]['from_epoch']} "
                 f"(best valid AUC {self.best_auc:.5f})" + (f"; changed: {', '.join(changed)}" if changed else ""))

    def _pinned(self, manifest: dict, key: str, name: str, why: str) -> str:
        """The sha256 the manifest's `key` entry pins (a crafted entry is one KitError)."""
        entry = manifest.get(key)
        sha = entry.get(M.SHA256) if isinstance(entry, dict) else None
        if not isinstance(sha, str):
            raise KitError(f"--resume: {self.out / MANIFEST} records no sha256 for {name}{why}; "
                           "refusing to load an unverified checkpoint")
        return sha

    def fit(self) -> dict:
        """Train until max_epochs or early stop; return the run's summary."""
        t_train = time.perf_counter()
        for epoch in range(self.start_epoch, self.cfg.runtime.max_epochs):
            if self.train_epoch(epoch):
                break
        self.timer.seconds["train"] = round(time.perf_counter() - t_train, 3)
        summary = self.summary()
        if self.dist.main:
            self.write_manifest(summary)
            self.handler.close()
            log.removeHandler(self.handler)
        self.dist.close()
        return summary

    def train_epoch(self, epoch: int) -> bool:
        """One pass over this rank's share of train, validating `evals_per_epoch` times;
        True when early stop ends the run."""
        cfg = self.cfg
        skip = 0
        if self.resume_at is not None:  # a run stopped after a validation inside this epoch
            state, skip = self.resume_at
            self.resume_at = None
            self.gen.set_state(state)
        self.epoch_generator = self.gen.get_state()  # replays this epoch's order on a mid-epoch resume
        batches = iter_batches(len(self.train), cfg.train.batch_size, generator=self.gen,
                               rank=self.dist.rank, world=self.dist.world,
                               lengths=self.train.lengths if getattr(self.core, "length_bucketing", True) else None)
        if not batches:
            raise KitError(f"train.parquet gave no batch (rows: {len(self.train)}, "
                           f"batch_size {cfg.train.batch_size})")
        marks = eval_marks(len(batches), cfg.train.evals_per_epoch)
        bar = tqdm(range(skip, len(batches)), total=len(batches), initial=skip,
                   desc=f"epoch {epoch + 1}/{cfg.runtime.max_epochs}",
                   disable=not (self.show and sys.stderr.isatty()), leave=False)
        self.model.train()
        meter = _LossMeter(self.dev)
        for step in bar:
            idx = batches[step]
            meter.add(self.train_step(self.train.batch(idx)), len(idx), step)
            if cfg.runtime.log_every and step % cfg.runtime.log_every == 0:
                bar.set_postfix(loss=f"{meter.read():.4f}")  # one read per interval
            if step + 1 in marks:
                loss, n = meter.close(epoch, self.opt.param_groups[0]["lr"])
                self.samples_per_s.append(n * self.dist.world / meter.seconds)
                self.train_seconds = meter.seconds
                auc, ll = self.evaluate() if self.dist.main else (math.nan, math.nan)
                if self.checkpoint_and_earlystop(epoch, loss, n, auc, ll,
                                                 at=(marks[step + 1], step + 1, len(batches))):
                    return True
                self.model.train()
                meter = _LossMeter(self.dev)
        return False

    def train_step(self, batch: dict) -> torch.Tensor:
        """One optimiser step; returns the batch's BCE loss as a device scalar (not read back)."""
        batch = {k: v.to(self.dev, non_blocking=True) for k, v in batch.items()}
        with autocast(self.dev, self.cfg.runtime.amp):
            logits = self.model(batch)
        loss = F.binary_cross_entropy_with_logits(logits.float(), batch["label"])
        full = loss + regularization(self.core, self.cfg)
        self.opt.zero_grad(set_to_none=True)
        full.backward()
        if self.cfg.train.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip_norm)
        self.opt.step()
        return loss.detach()

    def evaluate(self) -> tuple[float, float]:
        """Valid AUC and log loss of the current weights (metrics refuse non-finite scores)."""
        probs = predict_split(self.core, self.valid, self.cfg.runtime.eval_batch_size, self.dev, self.cfg.runtime.amp)
        labels = self.valid.label.cpu().numpy()
        return roc_auc(labels, probs), log_loss(labels, probs)

    def checkpoint_and_earlystop(self, epoch: int, loss: float, n: int, auc: float, ll: float,
                                 at: tuple[float, int, int] | None = None) -> bool:
        """Record the validation, save best/last, decay the lr on no gain; True when training stops.

        `at` = (fraction of the epoch, steps done, steps in the epoch); None = the epoch's end.
        """
        cfg = self.cfg
        fraction, done, steps = at or (1.0, 1, 1)
        label = epoch_label(epoch, fraction)
        improved = self.dist.broadcast_flag(auc > self.best_auc + MIN_DELTA)
        lr = self.opt.param_groups[0]["lr"]  # the rate this interval trained at
        if not improved:  # FuxiCTR: lr x factor on every validation without gain, floor
            for g in self.opt.param_groups:  # 1e-6; before last.pt is written, so a resume keeps it
                g["lr"] = max(g["lr"] * cfg.train.lr_decay_factor, MIN_LR)
        rngs = self.dist.gather(rng_state())
        if self.dist.main:
            row = {"epoch": label, "train_loss": loss, "valid_auc": auc, "valid_logloss": ll,
                   "lr": lr, "train_seconds": round(self.train_seconds, 3),
                   "samples_per_s": round(self.samples_per_s[-1], 1)}
            self.history.append(row)
            with open(self.out / HISTORY, "a") as f:
                f.write(json.dumps(row) + "\n")
            log.info(f"epoch {label}: loss {loss:.4f} valid AUC {auc:.5f} logloss {ll:.4f} "
                     f"({self.samples_per_s[-1]:,.0f} samples/s)" + ("  *best*" if improved else ""))
            base = {"model": self.core.state_dict(), "model_args": self.model_args, "config": cfg.learned()}
            if improved:
                self.best_auc, self.best_epoch, self.bad_evals = auc, label, 0
                sha = save_checkpoint(self.out / BEST, {**base, "epoch": label, "valid_auc": auc})
                self.checkpoints[M.CHECKPOINT] = {M.PATH: BEST, M.SHA256: sha}
            else:
                self.bad_evals += 1
            sha = save_checkpoint(self.out / LAST, {
                **base, "optimizer": self.opt.state_dict(), "epoch": epoch, "best_auc": self.best_auc,
                "best_epoch": self.best_epoch, "bad_evals": self.bad_evals,
                "history": self.history,
                "rng": rngs, "generator": self.gen.get_state(), "resumed": self.resumed,
                **({"steps_done": done, "epoch_generator": self.epoch_generator} if done < steps else {})})
            self.checkpoints[LAST_CHECKPOINT] = {M.PATH: LAST, M.SHA256: sha}
            self.write_manifest(self.summary(), done=False)
        stop = self.dist.broadcast_flag(self.bad_evals >= cfg.train.early_stop_patience)
        if stop:
            log.info(f"early stop: no valid AUC gain in {cfg.train.early_stop_patience} validations")
        return stop

    def summary(self) -> dict:
        return {"best_valid_auc": self.best_auc, "best_epoch": self.best_epoch, "history": self.history,
                "params": self.n_params,
                "samples_per_s": float(np.median(self.samples_per_s)) if self.samples_per_s else None}

    def write_manifest(self, summary: dict, done: bool = True) -> None:
        """The run's manifest; rewritten after every epoch so that it names the current checkpoints."""
        write_manifest(self.out / MANIFEST, "task2", **{
            M.CONFIG: self.cfg.learned(), M.RUNTIME: self.cfg.runtime.model_dump(),
            M.N_MODELS: 1, M.PRETRAINED: [], M.INPUTS: self.inputs, DATA_FILES: self.data_files,
            M.TIMINGS: self.timer.seconds, M.ITEM_INFO: self.item_info_entry,
            M.CHECKPOINT: self.checkpoints.get(M.CHECKPOINT), LAST_CHECKPOINT: self.checkpoints.get(LAST_CHECKPOINT),
            RESUMED: self.resumed, "log": LOG, "finished": done},
            model=self.cfg.model, device=str(self.dev), world_size=self.dist.world, **summary)


def train_model(cfg: RunConfig, data_dir, item_info_path=None, out_dir="runs/task2", device=None,
                max_epochs: int | None = None, quiet: bool = False, resume: bool = False) -> dict:
    """Train cfg.model on train.parquet, select on valid AUC; return the run's summary.

    Writes best.pt, last.pt, history.jsonl, train.log and manifest.json into out_dir.
    """
    if device is not None:
        cfg = cfg.replace("runtime", device=device)
    if max_epochs is not None:
        cfg = cfg.replace("runtime", max_epochs=max_epochs)
    return Trainer(cfg, data_dir, item_info_path, out_dir, quiet=quiet, resume=resume).fit()

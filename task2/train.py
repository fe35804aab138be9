"""One training loop in FuxiCTR's shape: fit -> train_epoch -> train_step, evaluate and
checkpoint_and_earlystop at each validation.

Single process by default; under `torchrun --nproc_per_node=N -m task2 train ...` it runs DDP
(each rank a share of every epoch, rank 0 validates, checkpoints and writes the manifest).
A training step never reads a value back from the GPU: the loss is summed on the device and
read once per validation (or per `log_every` steps). The run folder is a `mmctr.rundir.RunDir`.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mmctr import contract as C
from mmctr import rundir as R
from mmctr.config import changed_keys
from mmctr.errors import KitError
from mmctr.io import Timer, file_sha256
from mmctr.metrics import log_loss, roc_auc
from mmctr.paths import DataPaths
from mmctr.runtime import Dist, autocast, resolve_device, rng_state, seed_everything, set_rng_state, set_threads
from mmctr.validate import validate_table

from .checkpoint import load_weights
from .config import RunConfig
from .data import ItemTable, iter_batches, load_split
from .models import create_model, model_args
from .predict import predict_split

# FuxiCTR 2.3.7 (rank_model.py): an epoch "improves" only by more than 1e-6; lr never below 1e-6.
MIN_DELTA, MIN_LR = 1e-6, 1e-6
# What --resume refuses to change: the model, and the order of the batches already consumed
# (with other data, below, either would silently give another result than the run it continues).
FIXED_ON_RESUME = ("model", "max_len", "seed", "n_items", "n_tags", "batch_size")

log = logging.getLogger("task2.train")


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


def setup_log(path: Path, show: bool) -> logging.Handler:
    """Lines to the run's train.log always, and to stderr unless quiet."""
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
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


def check_splits(paths: DataPaths) -> None:
    """train/valid/test against the data contract, as `mmctr validate` checks them: the first
    problem is one KitError line naming file, column and row. (Item ids beyond item_info are
    load_split's to name: it asks whether item_info comes from the same data.)"""
    for table in (C.TRAIN, C.VALID, C.TEST):
        problems = validate_table(paths.require(table), table)
        if problems:
            more = f" (+{len(problems) - 1} more: `python -m mmctr validate`)" if len(problems) > 1 else ""
            raise KitError(f"{problems[0]}{more}")


def _fixed(args: dict, config: dict) -> dict:
    """The keys FIXED_ON_RESUME of a run: its model_args (model keys included) and batch size."""
    flat = {**args, **args["config"], "batch_size": config["batch_size"]}
    return {k: v for k, v in flat.items() if k != "config"}


def refuse_resume(state: dict, model_args: dict, config: dict, inputs: dict, run: R.RunDir) -> None:
    """One KitError when resuming `state` (last.pt) with this model, config and inputs would
    silently give another result than the run it continues."""
    old, new = _fixed(state["model_args"], state["config"]), _fixed(model_args, config)
    if old["model"] != new["model"]:
        raise KitError(f"--resume: {run.last} holds model '{old['model']}', the config asks for "
                       f"'{new['model']}'; use another --out or the same config")
    if refused := changed_keys(old, new):
        raise KitError(f"--resume: key(s) {refused} differ from the run in {run.path} ("
                       + ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in refused)
                       + "): another model or batch order; use another --out or the run's own values")
    # by content, role by role (train, valid, ..., item_info): a run folder or item_info moved
    # elsewhere still resumes; the same file in another role does not
    old_sums = list(state["inputs"].values())
    differ = [p for i, (p, s) in enumerate(inputs.items()) if i >= len(old_sums) or old_sums[i] != s]
    if differ or len(old_sums) != len(inputs):
        raise KitError(f"--resume: input file(s) {differ} differ from those the run in {run.path} "
                       "started on (sha256); resume needs the same data and item_info")


def locate_inputs(files: list, data_root: Path, run_dir: Path) -> tuple[dict, dict, dict]:
    """({path: sha256} of every input, the same for those in the data root, the entry of the
    last file (item_info)), paths as `rundir.locate` records them."""
    where = [(p, R.locate(p, data_root, run_dir)) for p in files]
    inputs = {w[R.PATH]: file_sha256(p) for p, w in where}
    data_files = {w[R.PATH]: inputs[w[R.PATH]] for _, w in where if w["root"] == "data"}
    return inputs, data_files, {**where[-1][1], R.SHA256: inputs[where[-1][1][R.PATH]]}


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
        self.cfg, self.run = cfg, R.RunDir(out_dir)
        self.out, self.timer, self.paths = self.run.path, Timer(), DataPaths.resolve(data_dir)
        self.run.check_out(self.paths.root)
        self.item_info_path = Path(item_info_path) if item_info_path else self.paths.require(C.ITEM_INFO)
        if resume and not self.run.last.is_file():
            raise KitError(f"--resume: {self.run.last} not found (nothing to resume); "
                           "train without --resume to start a fresh run")
        set_threads(cfg.runtime.num_threads)
        self.dist = Dist(resolve_device(cfg.runtime.device))
        self.dev, self.show = self.dist.device, not quiet and self.dist.main
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.main:
            if not resume:
                self.run.clear()
            self.handler = setup_log(self.run.log, self.show)
        seed_everything(cfg.train.seed)
        self.start_epoch, self.best_auc, self.best_epoch, self.bad_evals = 0, -math.inf, -1, 0
        self.history, self.resumed, self.samples_per_s, self.checkpoints = [], [], [], {}
        self.resume_at = self.epoch_generator = None  # a mid-epoch position: (generator state, steps done)
        self._load_data()
        self._build()
        self.gen = torch.Generator().manual_seed(cfg.train.seed)
        if resume:
            self._resume()

    def _load_data(self) -> None:
        with self.timer("load"):
            self.items = ItemTable.load(self.item_info_path)
            check_splits(self.paths)
            n, max_len = self.items.n_items, self.cfg.train.max_len
            self.train = load_split(self.paths.require(C.TRAIN), max_len, n, need_label=True)
            self.valid = load_split(self.paths.require(C.VALID), max_len, n, need_label=True)
            data_dev = self.dev if self.dev.type == "cuda" else torch.device("cpu")
            self.train, self.valid = self.train.to(data_dev), self.valid.to(data_dev)
        with self.timer("hash"):
            self.inputs, self.data_files, self.item_info_entry = locate_inputs(
                [self.train.path, self.valid.path, self.item_info_path], self.paths.root, self.out)

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
        """Continue from last.pt, the user's own file (nanoGPT's way): refuse only another model,
        other data or another batch order; record every other key that changed."""
        state = self.run.load_checkpoint(R.LAST, pinned=None, map_location=self.dev)
        refuse_resume(state, self.model_args, self.cfg.learned(), self.inputs, self.run)
        load_weights(self.core, state["model"], f"--resume: {self.run.last} does not fit this model")
        self.opt.load_state_dict(state["optimizer"])
        changed = changed_keys(state["config"], self.cfg.learned())
        if "learning_rate" in changed:  # apply the new rate; otherwise keep the decayed one
            for g in self.opt.param_groups:
                g["lr"] = self.cfg.train.learning_rate
        inside = "steps_done" in state  # stopped after a validation inside an epoch: finish it
        self.start_epoch = state["epoch"] + (0 if inside else 1)
        self.resume_at = (state["epoch_generator"], state["steps_done"]) if inside else None
        self.best_auc, self.best_epoch, self.bad_evals = state["best_auc"], state["best_epoch"], state["bad_evals"]
        self.history, self.checkpoints = list(state["history"]), dict(state["checkpoints"])
        self.resumed = [*state["resumed"], {"from_epoch": self.history[-1]["epoch"] if self.history else 0,
                                            "changed": {k: [state["config"].get(k), self.cfg.learned().get(k)]
                                                        for k in changed}}]
        set_rng_state(state["rng"][min(self.dist.rank, len(state["rng"]) - 1)])
        self.gen.set_state(state["generator"])
        log.info(f"resumed from {self.run.last} after epoch {self.resumed[-1]['from_epoch']} "
                 f"(best valid AUC {self.best_auc:.5f})" + (f"; changed: {', '.join(changed)}" if changed else ""))

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
        cfg, skip = self.cfg, 0
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
            meter.add(self.train_step(self.train.batch(batches[step])), len(batches[step]), step)
            if cfg.runtime.log_every and step % cfg.runtime.log_every == 0:
                bar.set_postfix(loss=f"{meter.read():.4f}")  # one read per interval
            if step + 1 in marks:
                loss, n = meter.close(epoch, self.opt.param_groups[0]["lr"])
                self.samples_per_s.append(n * self.dist.world / meter.seconds)
                self.train_seconds = meter.seconds
                auc, ll = self.evaluate() if self.dist.main else (math.nan, math.nan)
                if self.checkpoint_and_earlystop(epoch, loss, n, auc, ll, at=(marks[step + 1], step + 1, len(batches))):
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
        self.opt.zero_grad(set_to_none=True)
        (loss + regularization(self.core, self.cfg)).backward()
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
        """FuxiCTR's rule: on a gain save best.pt, else decay the lr; save last.pt; True when
        `early_stop_patience` validations in a row brought no gain.

        `at` = (fraction of the epoch, steps done, steps in the epoch); None = the epoch's end.
        """
        fraction, done, steps = at or (1.0, 1, 1)
        label, lr = epoch_label(epoch, fraction), self.opt.param_groups[0]["lr"]  # the rate this interval trained at
        improved = self.dist.broadcast_flag(auc > self.best_auc + MIN_DELTA)
        if improved:
            self.best_auc, self.best_epoch, self.bad_evals = auc, label, 0
        else:  # lr x factor, floor 1e-6; before last.pt is written, so a resume keeps it
            self.bad_evals += 1
            for g in self.opt.param_groups:
                g["lr"] = max(g["lr"] * self.cfg.train.lr_decay_factor, MIN_LR)
        rngs = self.dist.gather(rng_state())
        if self.dist.main:
            self._record({"epoch": label, "train_loss": loss, "valid_auc": auc, "valid_logloss": ll, "lr": lr,
                          "train_seconds": round(self.train_seconds, 3),
                          "samples_per_s": round(self.samples_per_s[-1], 1)}, improved)
            self._save(epoch, label, improved, rngs, steps_done=done if done < steps else None)
        stop = self.dist.broadcast_flag(self.bad_evals >= self.cfg.train.early_stop_patience)
        if stop:
            log.info(f"early stop: no valid AUC gain in {self.cfg.train.early_stop_patience} validations")
        return stop

    def _record(self, row: dict, improved: bool) -> None:
        self.history.append(row)
        self.run.append_history(row)
        log.info(f"epoch {row['epoch']}: loss {row['train_loss']:.4f} valid AUC {row['valid_auc']:.5f} "
                 f"logloss {row['valid_logloss']:.4f} ({row['samples_per_s']:,.0f} samples/s)"
                 + ("  *best*" if improved else ""))

    def _save(self, epoch: int, label, improved: bool, rngs: list, steps_done: int | None) -> None:
        """best.pt on a gain; last.pt (everything a resume needs) always; then the manifest."""
        base = {"model": self.core.state_dict(), "model_args": self.model_args, "config": self.cfg.learned()}
        if improved:
            self.checkpoints[R.CHECKPOINT] = self.run.save_checkpoint(
                R.BEST, {**base, "epoch": label, "valid_auc": self.best_auc})
        self.checkpoints[R.LAST_CHECKPOINT] = self.run.save_checkpoint(R.LAST, {
            **base, "optimizer": self.opt.state_dict(), "epoch": epoch, "best_auc": self.best_auc,
            "best_epoch": self.best_epoch, "bad_evals": self.bad_evals, "history": self.history,
            "rng": rngs, "generator": self.gen.get_state(), "resumed": self.resumed, "inputs": self.inputs,
            "checkpoints": {R.CHECKPOINT: self.checkpoints.get(R.CHECKPOINT)},
            **({"steps_done": steps_done, "epoch_generator": self.epoch_generator} if steps_done else {})})
        self.write_manifest(self.summary(), done=False)

    def summary(self) -> dict:
        return {"best_valid_auc": self.best_auc, "best_epoch": self.best_epoch, "history": self.history,
                "params": self.n_params,
                "samples_per_s": float(np.median(self.samples_per_s)) if self.samples_per_s else None}

    def write_manifest(self, summary: dict, done: bool = True) -> None:
        """The run's manifest; rewritten after every validation so that it names the current checkpoints."""
        self.run.write_manifest(**{
            R.CONFIG: self.cfg.learned(), R.RUNTIME: self.cfg.runtime.model_dump(),
            R.N_MODELS: 1, R.PRETRAINED: [], R.INPUTS: self.inputs, R.DATA_FILES: self.data_files,
            R.TIMINGS: self.timer.seconds, R.ITEM_INFO: self.item_info_entry, R.RESUMED: self.resumed,
            **{k: self.checkpoints.get(k) for k in (R.CHECKPOINT, R.LAST_CHECKPOINT)}, R.LOG: R.LOG_FILE,
            "finished": done},
            model=self.cfg.model, device=str(self.dev), world_size=self.dist.world, **summary)


def train_model(cfg: RunConfig, data_dir, item_info_path=None, out_dir="runs/task2", device=None,
                max_epochs: int | None = None, quiet: bool = False, resume: bool = False) -> dict:
    """Train cfg.model on train.parquet, select on valid AUC; return the run's summary.

    Holds the run folder's lock (rank 0 of a torchrun job) while it writes what `RunDir` names.
    """
    if device is not None:
        cfg = cfg.replace("runtime", device=device)
    if max_epochs is not None:
        cfg = cfg.replace("runtime", max_epochs=max_epochs)
    from mmctr.runs import is_main_process

    run = R.RunDir(out_dir)
    run.check_out(DataPaths.resolve(data_dir).root)
    with run.lock() if is_main_process() else nullcontext():
        return Trainer(cfg, data_dir, item_info_path, out_dir, quiet=quiet, resume=resume).fit()

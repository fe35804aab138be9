"""The rank-1 solution's own Transformer_DCN (a checkout of pinskyrobin/WWW2025_MMCTR given by path),
run inside the FuxiCTR 2.3.7 environment (`make fuxictr-env`).

Not part of the kit's import tree: it runs under the FuxiCTR interpreter and imports only the
standard library, fuxictr, torch, numpy, pandas, task1/fuxictr_runner.py (the organisers' DIN
runner: its feature map, weights loading and CLI) and the peer's src/Transformer_DCN.py and
src/mmctr_dataloader.py, all loaded by file path (theirs never copied). The flow is their run_expid.py's:
FeatureProcessor + build_dataset (rebuild_dataset=False: ids used as given), FeatureMap, their
model class built from the params, their MMCTRDataLoader through FuxiCTR's RankDataLoader, fit.
The kit drives it by subprocess (bench/bench_peer_momo.py) with one params JSON.

    train:  python -I peer_momo_runner.py train  --params p.json --out result.json
    parity: python -I peer_momo_runner.py parity --params p.json --weights w.npz --out o.npz [--steps-batch B]
            (one batch = the whole train file: eval-mode logits, loss, gradients, one optimizer step;
            with B: then steps over the file in batches of B, in order, from the same weights)
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import fuxictr
from fuxictr.pytorch.dataloaders import RankDataLoader

FUXICTR_VERSION = "2.3.7"


def _task1_runner():
    """task1/fuxictr_runner.py (the organisers' DIN runner, same environment) by path: its
    RunnerError, load_weights and write_json serve here too."""
    path = Path(__file__).resolve().parents[1] / "task1" / "fuxictr_runner.py"
    spec = importlib.util.spec_from_file_location("task1_fuxictr_runner", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FX = _task1_runner()
RunnerError = FX.RunnerError


def peer_module(peer: str, name: str):
    """src/NAME.py of the peer checkout, imported by path (its package __init__ is not run)."""
    path = Path(peer) / "src" / f"{name}.py"
    if not path.is_file():
        raise RunnerError(f"{path}: not found (MMCTR_PEER_MOMO must name a checkout of pinskyrobin/WWW2025_MMCTR)")
    spec = importlib.util.spec_from_file_location(f"peer_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def setup(params_path: str):
    """Params, feature map (under params' data_root, a work folder) and the peer's classes."""
    if fuxictr.__version__ != FUXICTR_VERSION:
        raise RunnerError(f"this environment has fuxictr {fuxictr.__version__}, the peer code needs {FUXICTR_VERSION}")
    params = json.loads(Path(params_path).read_text())
    feature_map = FX.feature_map_of(params)
    model_cls = peer_module(params["peer"], "Transformer_DCN").Transformer_DCN
    loader_cls = peer_module(params["peer"], "mmctr_dataloader").MMCTRDataLoader
    return params, feature_map, model_cls, loader_cls


def parity(args) -> None:
    """Weights by the peer's names; the whole train file as one batch through their loader; eval
    mode: logits, y_pred, loss, every gradient, then one train_step (clip + Adam) and the weights after;
    and the fresh model's own initial state."""
    params, feature_map, model_cls, loader_cls = setup(args.params)
    model = model_cls(feature_map, **params)
    fresh = {f"init/{n}": t.detach().numpy().copy() for n, t in model.state_dict().items()}
    FX.load_weights(model, args.weights, "the peer's Transformer_DCN")
    gen = loader_cls(feature_map, params["train_data"], params["item_info"], batch_size=10 ** 9, shuffle=False,
                     num_workers=0)
    batch = next(iter(gen))
    logits = {}
    last = [m for m in model.mlp.mlp if isinstance(m, nn.Linear)][-1]
    last.register_forward_hook(lambda m, i, o: logits.update(out=o))
    model.eval()
    with torch.no_grad():
        y_nograd = model(batch)["y_pred"]  # the inference path (PyTorch's fast path where it applies)
    y_pred = model(batch)["y_pred"]
    loss = model.compute_loss({"y_pred": y_pred}, model.get_labels(batch))
    model.zero_grad()
    loss.backward()
    out = {"y_pred": y_pred.detach().numpy().reshape(-1), "y_pred_nograd": y_nograd.numpy().reshape(-1),
           "logits": logits["out"].detach().numpy().reshape(-1), "loss": np.float64(float(loss)),
           "seq_width": np.int64(batch[2].shape[1])}
    out.update(fresh)
    out.update({f"grad/{n}": p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None})
    model._max_gradient_norm, model._batch_index = params.get("max_gradient_norm", 10.0), 0
    model.train_step(batch)  # their step: loss / accumulation_steps, backward, clip, Adam (still eval mode)
    out.update({f"step/{n}": p.detach().numpy().copy() for n, p in model.named_parameters()})
    if args.steps_batch:  # lockstep: a fresh model and optimizer from the same weights, the file's batches in order
        model = model_cls(feature_map, **params)
        FX.load_weights(model, args.weights, "the peer's Transformer_DCN")
        model.eval()
        model._max_gradient_norm = params.get("max_gradient_norm", 10.0)
        losses = []
        for i, b in enumerate(loader_cls(feature_map, params["train_data"], params["item_info"],
                                         batch_size=int(args.steps_batch), shuffle=False, num_workers=0)):
            model._batch_index = i
            losses.append(float(model.train_step(b)))
        out["lockstep_losses"] = np.array(losses)
        out.update({f"lockstep/{n}": p.detach().numpy().copy() for n, p in model.named_parameters()})
    np.savez(args.out, **out)


def timed(model_cls):
    """The peer's class, recording per-epoch train seconds, samples/s and valid AUC (eval_step as FuxiCTR's)."""

    class Timed(model_cls):
        def train_epoch(self, data_generator):
            self._epoch_start, self._epoch_rows = time.perf_counter(), 0
            super().train_epoch(data_generator)

        def train_step(self, batch_data):
            loss = super().train_step(batch_data)
            self._epoch_rows += len(batch_data[2])
            return loss

        def eval_step(self):
            seconds = time.perf_counter() - self._epoch_start
            logs = self.evaluate(self.valid_gen, metrics=["AUC", "logloss"])
            self.history.append({"epoch": self._epoch_index + 1, "valid_auc": float(logs["AUC"]),
                                 "valid_logloss": float(logs["logloss"]), "train_seconds": round(seconds, 3),
                                 "samples_per_s": round(self._epoch_rows / seconds, 1)})
            self.checkpoint_and_earlystop(logs)
            self.train()

    return Timed


def train(args) -> None:
    params, feature_map, model_cls, loader_cls = setup(args.params)
    model = timed(model_cls)(feature_map, **params)
    model.history = []
    params["data_loader"] = loader_cls
    train_gen, valid_gen = RankDataLoader(feature_map, stage="train", **params).make_iterator()
    t0 = time.perf_counter()
    model.fit(train_gen, validation_data=valid_gen, **params)  # ends by reloading the best checkpoint
    fit_seconds = time.perf_counter() - t0
    valid = model.evaluate(valid_gen, metrics=["AUC", "logloss"])
    result = {"engine": "peer", "fuxictr_version": fuxictr.__version__, "torch_version": torch.__version__,
              "history": model.history, "best_valid_auc": float(valid["AUC"]),
              "params": sum(p.numel() for p in model.parameters()), "fit_seconds": round(fit_seconds, 3),
              "samples_per_s": float(np.median([h["samples_per_s"] for h in model.history]))}
    if params.get("test_data"):
        test_gen = RankDataLoader(feature_map, stage="test", **params).make_iterator()
        result["test_pred"] = model.predict(test_gen).tolist()
    FX.write_json(args.out, result)


def main(argv=None) -> int:
    common = [("--params", None), ("--out", None)]
    return FX.cli(argv, __doc__.splitlines()[0], {"train": train, "parity": parity},
                  {"train": common, "parity": [*common, ("--weights", None),
                                               ("--steps-batch", "then train_step over batches of this size")]})


if __name__ == "__main__":
    sys.exit(main())

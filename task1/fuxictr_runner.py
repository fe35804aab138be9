"""The organisers' DIN on FuxiCTR 2.3.7, run inside the FuxiCTR environment (`make fuxictr-env`).

Not part of the kit's import tree: it runs under `.venv-fuxictr/bin/python` (numpy<2, fuxictr
2.3.7) and imports only the standard library, fuxictr, torch, numpy, pandas and yaml. The kit
drives it by subprocess (task1/fuxictr_engine.py) through a FuxiCTR config folder it writes.

The model mirrors the WWW2025_MMCTR_Challenge baseline (src/DIN.py, src/mmctr_dataloader.py):
FuxiCTR's BaseModel, FeatureEmbedding, DIN_Attention and MLP_Block; the target item is the last
of [sequence items..., target]; the DNN sees [likes, views, target, attention-pooled sequence].
Feature map built as their run_expid.py does it (rebuild_dataset=False: ids are used as given).

    train:  python fuxictr_runner.py train  --config-dir D --expid E --out result.json
            [--init-weights w.npz] [--order order.npy]   (lockstep: given start, given batches)
    parity: python fuxictr_runner.py parity --config-dir D --expid E --weights w.npz
            --batch b.npz --out o.npz      (eval-mode outputs, regularisation, gradients)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def _load_ledger():
    """mmctr/ledger.py by path (standard library only): this interpreter cannot import the kit."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("mmctr_ledger", Path(__file__).resolve().parents[1] / "mmctr"
                                                  / "ledger.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.install("task1 fuxictr_runner")
    return mod


LEDGER = _load_ledger()  # before fuxictr and torch: their imports are recorded as they happen

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import fuxictr  # noqa: E402
from fuxictr.features import FeatureMap  # noqa: E402
from fuxictr.preprocess import FeatureProcessor, build_dataset  # noqa: E402
from fuxictr.pytorch.layers import DIN_Attention, FeatureEmbedding, MLP_Block  # noqa: E402
from fuxictr.pytorch.models import BaseModel  # noqa: E402
from fuxictr.pytorch.torch_utils import seed_everything  # noqa: E402
from fuxictr.utils import load_config  # noqa: E402

FUXICTR_VERSION = "2.3.7"
ITEM_COLUMNS = ("item_id", "item_tags", "item_emb_d128")


class RunnerError(Exception):
    """A failure the kit reports as one line."""


class DIN(BaseModel):
    """The organisers' DIN: FuxiCTR layers, item features embedded for sequence + target."""

    def __init__(self, feature_map, model_id="DIN", gpu=-1, dnn_hidden_units=(512, 128, 64),
                 dnn_activations="ReLU", attention_hidden_units=(64,),
                 attention_hidden_activations="Dice", attention_output_activation=None,
                 attention_dropout=0, learning_rate=1e-3, embedding_dim=10, net_dropout=0,
                 batch_norm=False, din_use_softmax=False, embedding_regularizer=None,
                 net_regularizer=None, **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu,
                         embedding_regularizer=embedding_regularizer,
                         net_regularizer=net_regularizer, **kwargs)
        self.item_info_dim = sum(spec.get("embedding_dim", embedding_dim)
                                 for spec in feature_map.features.values() if spec.get("source") == "item")
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.attention_layers = DIN_Attention(self.item_info_dim, attention_units=list(attention_hidden_units),
                                              hidden_activations=attention_hidden_activations,
                                              output_activation=attention_output_activation,
                                              dropout_rate=attention_dropout, use_softmax=din_use_softmax)
        self.dnn = MLP_Block(input_dim=feature_map.sum_emb_out_dim() + self.item_info_dim, output_dim=1,
                             hidden_units=list(dnn_hidden_units), hidden_activations=dnn_activations,
                             output_activation=self.output_activation, dropout_rates=net_dropout,
                             batch_norm=batch_norm)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        batch_dict, item_dict, mask = self.get_inputs(inputs)
        emb_list = [self.embedding_layer(batch_dict, flatten_emb=True)] if batch_dict else []
        items = self.embedding_layer(item_dict, flatten_emb=True).view(mask.shape[0], -1, self.item_info_dim)
        target, sequence = items[:, -1, :], items[:, :-1, :]
        pooled = self.attention_layers(target, sequence, mask)
        return {"y_pred": self.dnn(torch.cat(emb_list + [target, pooled], dim=-1))}

    def get_inputs(self, inputs, feature_source=None):
        batch_dict, item_dict, mask = inputs
        x = {k: v.to(self.device) for k, v in batch_dict.items()
             if k not in self.feature_map.labels and self.feature_map.features[k]["type"] != "meta"}
        return x, {k: v.to(self.device) for k, v in item_dict.items()}, mask.to(self.device)

    def get_labels(self, inputs):
        return inputs[0][self.feature_map.labels[0]].to(self.device).float().view(-1, 1)

    def get_group_id(self, inputs):
        return inputs[0][self.feature_map.group_id]


class RecordingDIN(DIN):
    """DIN whose per-epoch validation also logs logloss, train seconds and samples/s."""

    def train_epoch(self, data_generator):
        self._epoch_start = time.perf_counter()
        self._epoch_loss = []
        super().train_epoch(data_generator)

    def train_step(self, batch_data):
        loss = super().train_step(batch_data)
        self._epoch_loss.append((float(loss.item()), len(batch_data[2])))
        return loss

    def eval_step(self):
        seconds = time.perf_counter() - self._epoch_start
        lr = self.optimizer.param_groups[0]["lr"]
        logs = self.evaluate(self.valid_gen, metrics=["AUC", "logloss"])
        n = sum(c for _, c in self._epoch_loss)
        self.step_losses.append([round(loss, 7) for loss, _ in self._epoch_loss])
        self.history.append({"epoch": self._epoch_index + 1,
                             "train_loss": sum(loss * c for loss, c in self._epoch_loss) / max(n, 1),
                             "valid_auc": float(logs["AUC"]), "valid_logloss": float(logs["logloss"]),
                             "lr": lr, "train_seconds": round(seconds, 3),
                             "samples_per_s": round(n / seconds, 1)})
        self.checkpoint_and_earlystop(logs)
        self.train()


def read_item_table(path):
    """item_info.parquet as arrays indexed by row (row i = item i, as the organisers' loader uses)."""
    df = pd.read_parquet(path, columns=list(ITEM_COLUMNS))
    ids = df["item_id"].to_numpy().astype(np.int64)
    if not np.array_equal(ids, np.arange(len(ids))):
        raise RunnerError(f"{path}: row i must hold item i")
    tags = np.array(df["item_tags"].to_list(), dtype=np.int64)
    emb = np.array(df["item_emb_d128"].to_list(), dtype=np.float32)
    return {"item_id": ids, "item_tags": tags, "item_emb_d128": emb}


def left_pad(seqs, max_len: int) -> np.ndarray:
    """Lists of item ids (most recent last) -> (n, max_len), the last max_len kept, zeros in front."""
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = np.asarray(s, dtype=np.int64)[-max_len:]
        if len(s):
            out[i, max_len - len(s):] = s
    return out


class SplitDataset(Dataset):
    """One split's columns as arrays; an item is a row index, collate() builds the batch."""

    def __init__(self, columns: dict):
        self.columns = columns

    def __len__(self):
        return len(self.columns["item_id"])

    def __getitem__(self, index):
        return index


def read_split(path, max_len: int, meta=("user_id",)) -> dict:
    df = pd.read_parquet(path)
    cols = {"item_seq": left_pad(df["item_seq"].to_list(), max_len),
            "item_id": df["item_id"].to_numpy().astype(np.int64),
            "likes_level": df["likes_level"].to_numpy().astype(np.int64),
            "views_level": df["views_level"].to_numpy().astype(np.int64),
            "label": df["label"].to_numpy().astype(np.float32)}
    for name in meta:
        if name in df.columns:
            cols[name] = df[name].to_numpy().astype(np.int64)
    return cols


class Collator:
    """(batch_dict, item_dict, mask) as the organisers' BatchCollator builds it: the item
    features of every sequence position and of the target (last), flattened.

    Sequence columns that are padding in every row of the batch are dropped (`trim`): DIN_Attention
    multiplies a padded position's score by its zero mask, so the outputs and gradients are those
    of the full max_len width, at a fraction of the attention MLP's cost."""

    def __init__(self, columns: dict, items: dict, trim: bool = True):
        self.columns, self.items, self.trim = columns, items, trim

    def __call__(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        batch = {k: torch.from_numpy(v[rows]) for k, v in self.columns.items() if k != "item_seq"}
        seqs = self.columns["item_seq"][rows]
        if self.trim:
            used = np.flatnonzero((seqs > 0).any(axis=0))
            seqs = seqs[:, used[0] if len(used) else seqs.shape[1] - 1:]
        flat = np.hstack([seqs, self.columns["item_id"][rows].reshape(-1, 1)]).reshape(-1)
        del batch["item_id"]
        item_dict = {k: torch.from_numpy(v[flat]) for k, v in self.items.items()}
        return batch, item_dict, torch.from_numpy((seqs > 0).astype(np.float32))


class EpochOrder:
    """Batch sampler: epoch e takes the rows in the order order[e], batch_size at a time."""

    def __init__(self, order: np.ndarray, batch_size: int):
        self.order, self.batch_size, self.epoch = order, batch_size, 0

    def __len__(self):
        return -(-self.order.shape[1] // self.batch_size)

    def __iter__(self):
        if self.epoch >= len(self.order):
            raise RunnerError(f"--order holds {len(self.order)} epoch(s); epoch {self.epoch + 1} asked for")
        perm = self.order[self.epoch]
        self.epoch += 1
        for start in range(0, len(perm), self.batch_size):
            yield perm[start:start + self.batch_size].tolist()


def loader(columns, items, batch_size, shuffle, order=None):
    if order is not None:
        return DataLoader(SplitDataset(columns), batch_sampler=EpochOrder(order, batch_size), num_workers=0,
                          collate_fn=Collator(columns, items))
    return DataLoader(SplitDataset(columns), batch_size=batch_size, shuffle=shuffle, num_workers=0,
                      collate_fn=Collator(columns, items))


def read_order(path, n_rows: int, epochs: int) -> np.ndarray:
    """(epochs, n_rows) int64: each row a permutation of the train rows."""
    order = np.load(path, allow_pickle=False)
    if order.ndim != 2 or order.shape[1] != n_rows or order.shape[0] < epochs:
        raise RunnerError(f"{path}: want shape (>= {epochs}, {n_rows}), got {order.shape}")
    if not all(np.array_equal(np.sort(o), np.arange(n_rows)) for o in order):
        raise RunnerError(f"{path}: every row must be a permutation of 0..{n_rows - 1}")
    return order.astype(np.int64)


def load_weights(model, path, what: str = "FuxiCTR's DIN") -> None:
    with np.load(path, allow_pickle=False) as w:
        state = {k: torch.from_numpy(w[k]) for k in w.files}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # torch's first line is only "Error(s) in loading state_dict for DIN:"
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise RunnerError(f"{path}: does not fit {what}: {lines[1] if len(lines) > 1 else lines[0]}") from None


def setup(config_dir: str, expid: str):
    """Params, feature map (written under the config's data_root, never the data dir) and model."""
    if fuxictr.__version__ != FUXICTR_VERSION:
        raise RunnerError(f"this environment has fuxictr {fuxictr.__version__}, the organisers' DIN needs "
                          f"{FUXICTR_VERSION}")
    params = load_config(config_dir, expid)
    params["gpu"] = params.get("gpu", -1)
    return params, feature_map_of(params)


def feature_map_of(params: dict):
    """Logging, threads and seed from params, then the feature map as the organisers' run_expid.py
    builds it (rebuild_dataset=False: ids used as given), under params' data_root."""
    logging.basicConfig(level=logging.INFO if params.get("verbose") else logging.WARNING,
                        format="%(asctime)s %(message)s", stream=sys.stderr, force=True)
    if params.get("num_threads"):
        torch.set_num_threads(int(params["num_threads"]))
    seed_everything(seed=params["seed"])
    processor = FeatureProcessor(**params)
    build_dataset(processor, **{**params, "rebuild_dataset": False})
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    feature_map = FeatureMap(params["dataset_id"], data_dir)
    feature_map.load(os.path.join(data_dir, "feature_map.json"), params)
    os.makedirs(os.path.join(params["model_root"], params["dataset_id"]), exist_ok=True)
    return feature_map


def train(args) -> None:
    params, feature_map = setup(args.config_dir, args.expid)
    model = RecordingDIN(feature_map, **params)
    model.history, model.step_losses = [], []
    if args.init_weights:
        load_weights(model, args.init_weights)
    items = read_item_table(params["item_info"])
    train_cols = read_split(params["train_data"], params["max_len"])
    valid_cols = read_split(params["valid_data"], params["max_len"])
    order = read_order(args.order, len(train_cols["item_id"]), params["epochs"]) if args.order else None
    train_gen = loader(train_cols, items, params["batch_size"], shuffle=params.get("shuffle", True), order=order)
    valid_gen = loader(valid_cols, items, params["batch_size"], shuffle=False)
    model.fit(train_gen, validation_data=valid_gen, **params)
    final = model.evaluate(valid_gen, metrics=["AUC", "logloss"])  # the best checkpoint, reloaded by fit
    hist = model.history
    best = max(range(len(hist)), key=lambda i: hist[i]["valid_auc"]) if hist else None
    result = {"engine": "fuxictr", "fuxictr_version": fuxictr.__version__, "torch_version": torch.__version__,
              "history": hist, "step_losses": model.step_losses, "best_valid_auc": float(final["AUC"]),
              "best_valid_logloss": float(final["logloss"]),
              "best_epoch": hist[best]["epoch"] if hist else None,
              "params": sum(p.numel() for p in model.parameters()),
              "samples_per_s": float(np.median([h["samples_per_s"] for h in hist])) if hist else None,
              LEDGER.LEDGER: LEDGER.snapshot()}
    write_json(args.out, result)


def parity(args) -> None:
    """Load weights by FuxiCTR name, run one batch in eval mode; write outputs, regularisation,
    the gradient of (BCE + regularisation) for every parameter and FuxiCTR's own initial state."""
    params, feature_map = setup(args.config_dir, args.expid)
    model = DIN(feature_map, **params)
    fresh = {f"init/{n}": t.detach().numpy().copy() for n, t in model.state_dict().items()}
    load_weights(model, args.weights)
    with np.load(args.batch, allow_pickle=False) as b:
        columns = {k: b[k] for k in b.files}
    items = read_item_table(params["item_info"])
    columns["item_seq"] = columns["item_seq"][:, -params["max_len"]:]
    batch = Collator(columns, items)(np.arange(len(columns["item_id"])))
    logits = {}
    last_linear = [m for m in model.dnn.mlp if isinstance(m, nn.Linear)][-1]
    last_linear.register_forward_hook(lambda m, i, o: logits.update(out=o))
    model.eval()
    y_pred = model(batch)["y_pred"]
    reg = model.regularization_loss()
    loss = model.compute_loss({"y_pred": y_pred}, model.get_labels(batch))
    model.zero_grad()
    loss.backward()
    out = {"y_pred": y_pred.detach().numpy().reshape(-1), "logits": logits["out"].detach().numpy().reshape(-1),
           "regularization": np.float64(float(reg)), "loss": np.float64(float(loss)),
           "seq_width": np.int64(batch[2].shape[1])}
    out.update(fresh)
    out.update({f"grad/{n}": p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None})
    np.savez(args.out, **out)


def write_json(path, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def cli(argv, description: str, commands: dict, options: dict) -> int:
    """argparse over `commands` {name: fn(args)}, each with `options` {name: [(flag, help or None
    = required)]}; a RunnerError is one line "error: ..." on stderr and exit status 2."""
    p = argparse.ArgumentParser(description=description)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in commands:
        s = sub.add_parser(name)
        for flag, text in options[name]:
            s.add_argument(flag, required=text is None, help=text)
    args = p.parse_args(argv)
    try:
        commands[args.cmd](args)
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    common = [("--config-dir", None), ("--expid", None), ("--out", None)]
    return cli(argv, __doc__.splitlines()[0], {"train": train, "parity": parity}, {
        "train": [*common, ("--init-weights", "start from these weights (FuxiCTR names, .npz)"),
                  ("--order", ".npy (epochs, rows): the train rows of each epoch, in order")],
        "parity": [*common, ("--weights", None), ("--batch", None)]})


if __name__ == "__main__":
    sys.exit(main())

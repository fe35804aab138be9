"""The challenge's three tracks: score column, which parts may change (challenge.md)."""
from __future__ import annotations

from dataclasses import dataclass

from . import contract as C
from .errors import KitError


@dataclass(frozen=True)
class Track:
    name: str
    column: str  # score column of prediction.csv
    new_embeddings: bool  # item_emb_d128 comes from task1
    custom_model: bool  # the CTR model may differ from the fixed baseline DIN


TRACKS = {
    "task1": Track("task1", C.TRACK_COLUMNS["task1"], new_embeddings=True, custom_model=False),
    "task2": Track("task2", C.TRACK_COLUMNS["task2"], new_embeddings=False, custom_model=True),
    "task1_2": Track("task1_2", C.TRACK_COLUMNS["task1_2"], new_embeddings=True, custom_model=True),
}

# Of the fixed DIN, the Task-1 track may change only these (challenge.md: Tracks and rules).
TASK1_TUNABLE = ("embedding_regularizer", "net_regularizer", "net_dropout", "learning_rate", "batch_size")


def get_track(name: str) -> Track:
    key = name.lower().replace("&", "_").replace("-", "_")
    if key not in TRACKS:
        raise KitError(f"unknown track '{name}': choose one of {', '.join(TRACKS)}")
    return TRACKS[key]

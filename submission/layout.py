"""Where a run directory ($(RUNS), e.g. runs/task1_2/) keeps what task1 and task2 wrote,
and the manifest keys that only task1/task2 write (the shared ones live in mmctr.manifest).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmctr import contract as C

TASK1_DIR, TASK2_DIR = "task1", "task2"
TASK1_ITEM_INFO = "item_info.parquet"
TASK1_MANIFEST = "item_info.manifest.json"
TASK2_MANIFEST = "manifest.json"

# task2 manifest keys (written by `task2 train` / `task2 predict`).
N_MODELS = "n_models"
ITEM_INFO = "item_info"  # {"path", "sha256"}: the item_info task2 trained on
PRETRAINED = "pretrained"  # [] pretrained weights used by the CTR model (must stay empty)
CHECKPOINT = "checkpoint"  # {"path", "sha256"}
PREDICTION = "prediction"  # {"path", "sha256", "rows", "column", "track", "test_path", "test_sha256",
#                             "checkpoints_used"}
CHECKPOINTS_USED = "checkpoints_used"
PATH, SHA256 = "path", "sha256"
RUNTIME = "runtime"  # runtime-only config keys (device, epochs budget...), kept apart from "config"
CONFIG_SOURCE = "config_source"  # task2 config's own bookkeeping key, not a hyperparameter

# The sample generator writes the true p_click and labels of valid/test here (mmctr.sample).
SAMPLE_TRUTH_DIR = "sample_truth"


@dataclass(frozen=True)
class RunLayout:
    runs: Path

    @classmethod
    def of(cls, runs) -> "RunLayout":
        return cls(Path(runs).expanduser().resolve())

    @property
    def item_info(self) -> Path:
        return self.runs / TASK1_DIR / TASK1_ITEM_INFO

    @property
    def task1_manifest(self) -> Path:
        return self.runs / TASK1_DIR / TASK1_MANIFEST

    @property
    def task2_manifest(self) -> Path:
        return self.runs / TASK2_DIR / TASK2_MANIFEST

    @property
    def prediction(self) -> Path:
        return self.runs / TASK2_DIR / C.SUBMISSION_FILE

"""Where a run directory ($(RUNS), e.g. runs/task1_2/) keeps what task1 and task2 wrote.
The names themselves are declared in mmctr.manifest, beside the manifest keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmctr import contract as C
from mmctr.manifest import (  # noqa: F401  (re-exported for submission's modules)
    CHECKPOINT, CHECKPOINTS_USED, CONFIG_SOURCE, ITEM_INFO, N_MODELS, PATH, PREDICTION, PRETRAINED,
    RUNTIME, SHA256, TASK1_DIR, TASK1_ITEM_INFO, TASK1_MANIFEST, TASK2_DIR, TASK2_MANIFEST)
from mmctr.sample import TRUTH_DIR as SAMPLE_TRUTH_DIR  # noqa: F401


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

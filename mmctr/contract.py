"""The data contract: every parquet file of the challenge, declared once.

task1, task2 and submission import these schemas; nothing else spells a column name.
Facts follow docs/challenge.md (the organisers' MicroLens_1M_x1 layout).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pyarrow as pa

EMB_DIM = 128
TAGS_LEN = 5
LEVEL_MAX = 10
BERT_DIM = 768
CLIP_RN50_DIM = 1024
MAX_SEQ_LEN = 64  # the baseline keeps the last 64 items of item_seq
# challenge.md (Data layout): item_tags vocab 11,740; real tag ids are 1..11740, 0 is padding.
TAG_VOCAB = 11740

# Column kinds: the logical type a consumer relies on; integer/float width may vary on read.
INT, FLOAT, STR, LIST_INT, LIST_FLOAT = "int", "float", "string", "list<int>", "list<float>"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    length: Optional[int] = None  # fixed list length, None = any
    required: bool = True
    lo: Optional[float] = None  # inclusive value range; "n_items" bounds are checked in validate
    hi: Optional[float] = None
    item_ref: bool = False  # values are item ids (0 allowed only in padded lists)
    value_type: Optional[pa.DataType] = None  # exact arrow (list value) type, where consumers need it


@dataclass(frozen=True)
class Table:
    name: str
    relpath: str  # relative to the data root (the folder holding MicroLens_1M_x1/)
    columns: tuple

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> list:
        return [c.name for c in self.columns]


CTR_DIR = "MicroLens_1M_x1"
USER_ID, ITEM_ID, ITEM_SEQ, LABEL = "user_id", "item_id", "item_seq", "label"
LIKES, VIEWS = "likes_level", "views_level"
ITEM_TAGS, ITEM_EMB = "item_tags", "item_emb_d128"
ITEM_TITLE, TXT_EMB, IMG_EMB = "item_title", "txt_emb_BERT", "img_emb_CLIPRN50"
ALT_EMBS = ("item_emb_d128_v1", "item_emb_d128_v2", "item_emb_d128_v3", "item_emb_d128_e4")


def _split(name: str, label_required: bool) -> Table:
    return Table(name, f"{CTR_DIR}/{name}.parquet", (
        Column(USER_ID, INT, lo=1),
        Column(ITEM_SEQ, LIST_INT, item_ref=True),
        Column(ITEM_ID, INT, item_ref=True),
        Column(LIKES, INT, lo=0, hi=LEVEL_MAX),
        Column(VIEWS, INT, lo=0, hi=LEVEL_MAX),
        Column(LABEL, FLOAT, required=label_required, lo=0, hi=1),
    ))


TRAIN = _split("train", True)
VALID = _split("valid", True)
TEST = _split("test", False)  # labels hidden; row order is the submission ID

ITEM_INFO = Table("item_info", f"{CTR_DIR}/item_info.parquet", (
    Column(ITEM_ID, INT, lo=0),
    Column(ITEM_TAGS, LIST_INT, length=TAGS_LEN, lo=0, hi=TAG_VOCAB),
    Column(ITEM_EMB, LIST_FLOAT, length=EMB_DIM, value_type=pa.float32()),
))

ITEM_FEATURE = Table("item_feature", "item_feature.parquet", (
    Column(ITEM_ID, INT, item_ref=True),
    Column(ITEM_TITLE, STR),
    Column(ITEM_TAGS, LIST_INT, length=TAGS_LEN, lo=0, hi=TAG_VOCAB),
    Column(LIKES, INT, lo=0, hi=LEVEL_MAX),
    Column(VIEWS, INT, lo=0, hi=LEVEL_MAX),
    Column(TXT_EMB, LIST_FLOAT, length=BERT_DIM, required=False),
    Column(IMG_EMB, LIST_FLOAT, length=CLIP_RN50_DIM, required=False),
))

ITEM_EMB_ALT = Table("item_emb", "item_emb.parquet", (
    Column(ITEM_ID, INT, item_ref=True),
    *(Column(n, LIST_FLOAT, length=EMB_DIM, required=False) for n in ALT_EMBS),
))

ITEM_SEQ_TABLE = Table("item_seq", "item_seq.parquet", (
    Column(USER_ID, INT, lo=1),
    Column(ITEM_SEQ, LIST_INT, item_ref=True),
))

IMAGES_DIR = "item_images"
IMAGES_RAR = "item_images.rar"
SPLITS = (TRAIN, VALID, TEST)
ALL_TABLES = (TRAIN, VALID, TEST, ITEM_INFO, ITEM_FEATURE, ITEM_EMB_ALT, ITEM_SEQ_TABLE)
OPTIONAL_TABLES = (ITEM_EMB_ALT,)  # shipped by the organisers, used by nobody required


def image_name(item_id: int) -> str:
    return f"{int(item_id)}.jpg"


# Exact arrow schema of item_info.parquet as the organisers' FuxiCTR code reads it.
ITEM_INFO_ARROW = pa.schema([
    pa.field(ITEM_ID, pa.int64()),
    pa.field(ITEM_TAGS, pa.list_(pa.int64())),
    pa.field(ITEM_EMB, pa.list_(pa.float32())),
])

# Submission format (challenge.md: Submission).
SUBMISSION_FILE = "prediction.csv"
SUBMISSION_ID = "ID"
TRACK_COLUMNS = {"task1": "Task1", "task2": "Task2", "task1_2": "Task1&2"}

"""A MicroLens-shaped sample data set with a planted, known click signal.

Generative story (seeded, deterministic):
- items have a topic (shows in title words, tags, cover colour), a style (shows only in the
  cover's shape), an item-specific latent part (shows only in behaviour) and a quality
  (shows in likes_level and in clicks);
- users mix a few topics and prefer a style; their sequences are drawn from that taste, so
  items co-occur in sequences by taste;
- shape "sampled" (the default, the organisers' way: MicroLens holds only clicks): each event is
  a user, their sequence, and the click = their next item, drawn from
  p(i) ~ pop_i * exp(a*<u, v_i> + r*<v_last, v_i> + b*quality_i) over the items not in the
  sequence; then k non-clicks sharing user and sequence, drawn without replacement among the
  items the user has not seen from q = uniform or pop^alpha (`negatives`, `pop_alpha`); rows
  shuffled within a split, 1/(k+1) positive. The oracle is the per-row Bayes posterior
  P(click | user, seq, item) = p(i) / (p(i) + k (1 - p(i)) q(i)) (first order in q);
- shape "bernoulli" (the kit's first sample): a click on (user, target) is
  Bernoulli(sigmoid(a*<u, v_target> + b*quality + bias)), target from taste or popularity.
The true click probability of every valid/test row goes to sample_truth/, outside the
organisers' layout, so benchmarks can report the oracle AUC; the sequence-only oracle is the
same with the user's taste estimated from the sequence (mean item latent).
"""
from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import contract as C
from .errors import KitError
from .io import write_json, write_parquet
from .metrics import roc_auc

TOPIC_WORDS = {
    "cooking": "recipe kitchen noodles spicy chef dumplings bake soup delicious breakfast",
    "football": "goal match striker league stadium penalty derby keeper tackle champions",
    "cats": "kitten cat meow purr whiskers fluffy litter paws tabby nap",
    "travel": "journey mountain beach hotel passport backpack island sunset flight tour",
    "music": "guitar song concert melody piano drums singer album chorus remix",
    "gaming": "gamer level boss console speedrun controller quest arcade loot esports",
    "makeup": "lipstick makeup eyeliner foundation blush tutorial glam skincare contour lashes",
    "cars": "engine drift supercar racing garage turbo exhaust wheels horsepower roadtrip",
    "fitness": "workout gym squat cardio muscle protein stretch yoga abs training",
    "dance": "choreography dance moves ballet hiphop routine rhythm spin stage freestyle",
    "comedy": "prank funny joke sketch laugh parody hilarious blooper meme standup",
    "science": "experiment physics chemistry rocket planet lab microscope atoms galaxy robot",
    "fashion": "outfit style dress sneakers runway vintage wardrobe denim jacket haul",
    "dogs": "puppy dog bark leash fetch retriever bulldog walkies tail treats",
    "nature": "forest river waterfall flowers birds wildlife garden trees meadow camping",
    "movies": "trailer cinema film actor review scene director blockbuster oscar sequel",
}
FILLER = "my new best today video vlog wow part day first life top ultimate".split()
SHAPES = ("circle", "square", "triangle", "stripes")
SHAPES_OF_LABELS = ("sampled", "bernoulli")
NEGATIVES = ("uniform", "popularity")
TRUTH_DIR = "sample_truth"  # side files: true p_click and labels of valid/test, summary.json
MARKER = ".mmctr-sample"  # written first into every sample root: only such a folder may be overwritten


@dataclass(frozen=True)
class SampleConfig:
    n_items: int = 2000
    n_users: int = 3000
    n_train: int = 60_000
    n_valid: int = 3_000
    n_test: int = 5_000
    n_topics: int = 16
    n_styles: int = 4
    n_tags: int = 320  # tag vocabulary (real data: 11,740)
    latent_dim: int = 16
    seq_pad: int = 32  # item_seq lists are left-padded to this length
    image_size: int = 64
    seed: int = 20242025
    workers: int = 2
    shape: str = "sampled"  # sampled: a click + k sampled non-clicks per event; bernoulli: the first sample
    negatives: str = "uniform"  # sampled shape: the non-click sampler, uniform or popularity**pop_alpha
    pop_alpha: float = 1.0
    neg_per_click: int = 3  # 25% positive, as the real train set

    def __post_init__(self):
        if self.shape not in SHAPES_OF_LABELS:
            raise KitError(f"shape must be one of {', '.join(SHAPES_OF_LABELS)}, got {self.shape!r}")
        if self.negatives not in NEGATIVES:
            raise KitError(f"negatives must be one of {', '.join(NEGATIVES)}, got {self.negatives!r}")
        if self.neg_per_click < 1:
            raise KitError(f"neg_per_click must be at least 1, got {self.neg_per_click}")
        need = self.seq_pad + self.neg_per_click + 1  # a full sequence, the click and its non-clicks
        if self.shape == "sampled" and self.n_items < need:
            raise KitError(f"the sampled shape needs at least {need} items (a sequence of {self.seq_pad}, the click "
                           f"and {self.neg_per_click} non-clicks), got {self.n_items}")
        if not -4 <= self.pop_alpha <= 4:
            raise KitError(f"pop_alpha must be in -4..4, got {self.pop_alpha}")

    @classmethod
    def full(cls, **kw) -> "SampleConfig":
        """The challenge's real sizes (GPU benchmarks)."""
        base = dict(n_items=91_717, n_users=1_000_000, n_train=3_600_000, n_valid=10_000,
                    n_test=379_142, n_tags=11_739, workers=8)
        base.update(kw)
        return cls(**base)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-9)


class World:
    """All latent variables of the generative story."""

    def __init__(self, cfg: SampleConfig):
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        self.rng = rng
        K, S, d, n = cfg.n_topics, cfg.n_styles, cfg.latent_dim, cfg.n_items
        self.topic_vec = _normalize(rng.normal(size=(K, d)))
        self.style_vec = _normalize(rng.normal(size=(S, d)))
        topic_pop = rng.dirichlet(np.full(K, 2.0))
        # index 0 is padding; items 1..n
        self.topic = np.concatenate([[0], rng.choice(K, size=n, p=topic_pop)])
        self.style = np.concatenate([[0], rng.integers(0, S, size=n)])
        own = rng.normal(size=(n + 1, d))
        self.item_vec = _normalize(self.topic_vec[self.topic] + 0.7 * self.style_vec[self.style]
                                   + 0.45 * _normalize(own))
        self.item_vec[0] = 0
        self.quality = rng.normal(0, 0.6, size=n + 1)
        self.popularity = np.exp(rng.normal(0, 1.0, size=n + 1))
        self.popularity[0] = 0
        # users: a sparse mixture of topics and one preferred style
        u = cfg.n_users
        self.user_topics = rng.dirichlet(np.full(K, 0.25), size=u)
        self.user_style = rng.integers(0, S, size=u)
        self.user_vec = _normalize(self.user_topics @ self.topic_vec
                                   + 0.7 * self.style_vec[self.user_style]
                                   + 0.25 * rng.normal(size=(u, d)) / np.sqrt(d))
        self.user_activity = np.exp(rng.normal(0, 0.8, size=u))
        # items sorted by topic, with popularity cumsums for fast per-topic draws
        order = np.argsort(self.topic[1:], kind="stable") + 1
        self._by_topic = order
        cum = np.cumsum(self.popularity[order])
        self._cum = cum
        counts = np.bincount(self.topic[1:], minlength=K)
        ends = np.cumsum(counts)
        starts = ends - counts
        self._lo = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
        self._hi = np.where(counts > 0, cum[np.maximum(ends - 1, 0)], self._lo)
        self._topic_has_items = counts > 0
        self.likes_level = self._levels(self.quality + rng.normal(0, 0.3, size=n + 1))
        self.views_level = self._levels(np.log(self.popularity.clip(1e-9)) + rng.normal(0, 0.5, size=n + 1))

    @staticmethod
    def _levels(score: np.ndarray) -> np.ndarray:
        ranks = np.argsort(np.argsort(score[1:]))
        lv = np.concatenate([[0], (ranks * 11 // max(len(ranks), 1)).clip(0, 10)])
        return lv.astype(np.int64)

    def draw_taste_items(self, users: np.ndarray, rng, candidates: int = 4) -> np.ndarray:
        """One item per entry of `users`, drawn from that user's taste."""
        m = len(users)
        cum_t = np.cumsum(self.user_topics[users] * self._topic_has_items, axis=1)
        r = rng.random(m) * cum_t[:, -1]
        topics = (r[:, None] > cum_t).sum(axis=1).clip(0, self.cfg.n_topics - 1)
        lo, hi = self._lo[topics], self._hi[topics]
        cand = np.empty((m, candidates), dtype=np.int64)
        for c in range(candidates):
            pos = np.searchsorted(self._cum, lo + rng.random(m) * (hi - lo), side="right")
            cand[:, c] = self._by_topic[pos.clip(0, len(self._by_topic) - 1)]
        score = np.einsum("md,mcd->mc", self.user_vec[users], self.item_vec[cand])
        score = 3.0 * score + rng.gumbel(size=score.shape)
        return cand[np.arange(m), score.argmax(axis=1)]

    def draw_popular_items(self, m: int, rng) -> np.ndarray:
        pos = np.searchsorted(self._cum, rng.random(m) * self._cum[-1], side="right")
        return self._by_topic[pos.clip(0, len(self._by_topic) - 1)]

    def seq_lengths(self, m: int, rng, cap: int) -> np.ndarray:
        # min 3, median ~6, mean ~8 (challenge.md: item_seq.parquet statistics)
        return (3 + np.floor(np.exp(rng.normal(1.1, 0.9, size=m)))).astype(np.int64).clip(3, cap)

    def sequences(self, users: np.ndarray, rng, cap: int, pad: int) -> np.ndarray:
        lens = self.seq_lengths(len(users), rng, cap)
        flat_users = np.repeat(users, lens)
        items = self.draw_taste_items(flat_users, rng)
        out = np.zeros((len(users), pad), dtype=np.int64)
        row = np.repeat(np.arange(len(users)), lens)
        within = np.arange(len(items)) - np.repeat(np.cumsum(lens) - lens, lens)
        out[row, pad - np.repeat(lens, lens) + within] = items  # left-padded, most recent last
        return out

    def seq_oracle_logit(self, targets, seqs) -> np.ndarray:
        """The click logit with the user's taste estimated from their sequence (mean item latent):
        the best a model that sees only sequences could do, had it learned every item exactly."""
        mask = (seqs > 0)[..., None]
        taste = (self.item_vec[seqs] * mask).sum(1) / np.maximum(mask.sum(1), 1)
        taste /= np.linalg.norm(taste, axis=1, keepdims=True).clip(1e-9)
        return self.click_logit_from(taste, targets, seqs)

    def click_logit(self, users, targets, seqs) -> np.ndarray:
        return self.click_logit_from(self.user_vec[users], targets, seqs)

    def click_logit_from(self, taste, targets, seqs) -> np.ndarray:
        if self.cfg.shape == "sampled":
            return self._posterior_logit(taste, targets, seqs)
        affinity = np.einsum("md,md->m", taste, self.item_vec[targets])
        # recency: similarity of the target to the most recent sequence item
        recent = np.einsum("md,md->m", self.item_vec[seqs[:, -1]], self.item_vec[targets])
        return 4.0 * affinity + 1.0 * recent + 1.2 * self.quality[targets]

    # ----- the sampled shape: a click from the taste, non-clicks from a sampler -----
    NEXT_AFFINITY, NEXT_RECENT, NEXT_QUALITY = 8.0, 2.0, 1.0

    def _next_weights(self, taste, seqs) -> tuple[np.ndarray, float]:
        """(m, n_items + 1) float32 weights w of the next item, p = w / w.sum(1), and the shift
        s with w = exp(logit - s); padding and the items already in the sequence weigh 0."""
        if not hasattr(self, "_vec_t"):
            self._vec_t = np.ascontiguousarray(self.item_vec.T, dtype=np.float32)
            prior = np.log(self.popularity.clip(1e-300)) + self.NEXT_QUALITY * self.quality
            self._shift = float(self.NEXT_AFFINITY + self.NEXT_RECENT + prior[1:].max())  # no exp overflows
            self._prior = (prior - self._shift).astype(np.float32)
        query = self.NEXT_AFFINITY * taste + self.NEXT_RECENT * self.item_vec[seqs[:, -1]]
        w = query.astype(np.float32) @ self._vec_t
        w += self._prior
        np.exp(w, out=w)
        w[np.arange(len(seqs))[:, None], seqs] = 0  # column 0 (padding) among them
        w[:, 0] = 0
        return w, self._shift

    @property
    def _neg_weight(self) -> np.ndarray:
        w = np.ones(self.cfg.n_items + 1) if self.cfg.negatives == "uniform" else self.popularity ** self.cfg.pop_alpha
        w[0] = 0
        return w

    def _chunks(self, m: int):
        step = max(1, (1 << 23) // (self.cfg.n_items + 1))
        return (slice(a, min(a + step, m)) for a in range(0, m, step))

    def _unseen_neg_mass(self, seqs) -> np.ndarray:
        """The sampler's total weight over the items not in each sequence (repeats counted once)."""
        srt = np.sort(seqs, axis=1)
        first = np.ones_like(srt, dtype=bool)
        first[:, 1:] = srt[:, 1:] != srt[:, :-1]
        w = self._neg_weight
        return w.sum() - (w[srt] * first).sum(1)

    def _posterior_logit(self, taste, targets, seqs) -> np.ndarray:
        """logit P(click | taste, seq, item): p / (p + k (1 - p) q), p the next-item probability of
        the target, q the sampler's probability of it among the unseen items."""
        # rows of one event share taste and sequence: one normaliser per distinct (taste, sequence)
        _, first, inv = np.unique(np.c_[taste, seqs], axis=0, return_index=True, return_inverse=True)
        inv = inv.ravel()
        order = np.argsort(inv, kind="stable")
        bounds = np.searchsorted(inv[order], np.arange(len(first) + 1))
        log_p = np.empty(len(targets))
        for sl in self._chunks(len(first)):
            w, _ = self._next_weights(taste[first[sl]], seqs[first[sl]])
            rows = order[bounds[sl.start]:bounds[sl.stop]]
            g = inv[rows] - sl.start
            with np.errstate(divide="ignore"):
                log_p[rows] = (np.log(w[g, targets[rows]].astype(np.float64))
                               - np.log(w.sum(1, dtype=np.float64))[g])
        log_p = np.minimum(log_p, -1e-12)
        log_q = np.log(self._neg_weight[targets].clip(1e-300)) - np.log(self._unseen_neg_mass(seqs))
        return log_p - np.log1p(-np.exp(log_p)) - np.log(self.cfg.neg_per_click) - log_q

    def draw_next_items(self, users, seqs, rng) -> np.ndarray:
        """The click of each event: the user's next item, from their taste and their latest item."""
        out = np.empty(len(users), dtype=np.int64)
        for sl in self._chunks(len(users)):
            w, _ = self._next_weights(self.user_vec[users[sl]], seqs[sl])
            cum = np.cumsum(w, axis=1, dtype=np.float64)
            r = rng.random(len(cum)) * cum[:, -1]
            out[sl] = [np.searchsorted(row, x, side="right") for row, x in zip(cum, r)]
            out[sl] = out[sl].clip(1, self.cfg.n_items)
        return out

    def draw_negatives(self, seqs, clicks, rng) -> np.ndarray:
        """k distinct non-clicks per event from the sampler, none in the sequence or the click."""
        k, m = self.cfg.neg_per_click, len(clicks)
        cum = np.cumsum(self._neg_weight)
        neg = np.zeros((m, k), dtype=np.int64)
        for j in range(k):
            todo = np.arange(m)
            while todo.size:
                cand = np.searchsorted(cum, rng.random(todo.size) * cum[-1], side="right").clip(1, self.cfg.n_items)
                taken = np.c_[seqs[todo], clicks[todo], neg[todo, :j]]
                bad = (taken == cand[:, None]).any(1)
                neg[todo[~bad], j] = cand[~bad]
                todo = todo[bad]
        return neg

    def sampled_interactions(self, m: int, rng):
        """m rows: ceil(m / (k + 1)) events of a click and k non-clicks sharing user and sequence,
        the last event cut to fit, rows shuffled."""
        c = self.cfg
        k1 = c.neg_per_click + 1
        events = -(-m // k1)
        p_user = self.user_activity / self.user_activity.sum()
        users = rng.choice(c.n_users, size=events, p=p_user)
        seqs = self.sequences(users, rng, cap=c.seq_pad, pad=c.seq_pad)
        clicks = self.draw_next_items(users, seqs, rng)
        items = np.c_[clicks, self.draw_negatives(seqs, clicks, rng)].ravel()[:m]
        labels = np.tile(np.r_[1.0, np.zeros(c.neg_per_click)], events)[:m].astype(np.float32)
        order = rng.permutation(m)
        row_event = (np.arange(events * k1) // k1)[:m][order]
        return users[row_event], seqs[row_event], items[order], labels[order]

    def interactions(self, m: int, rng, bias: float, with_p: bool = True):
        """(users, seqs, targets, p_click or None, labels) of m rows."""
        c = self.cfg
        if c.shape == "sampled":
            users, seqs, targets, labels = self.sampled_interactions(m, rng)
            p = 1.0 / (1.0 + np.exp(-self.click_logit(users, targets, seqs))) if with_p else None
            return users, seqs, targets, p, labels
        p_user = self.user_activity / self.user_activity.sum()
        users = rng.choice(c.n_users, size=m, p=p_user)
        seqs = self.sequences(users, rng, cap=c.seq_pad, pad=c.seq_pad)
        taste = rng.random(m) < 0.5
        targets = np.where(taste, self.draw_taste_items(users, rng), self.draw_popular_items(m, rng))
        p = 1.0 / (1.0 + np.exp(-(self.click_logit(users, targets, seqs) + bias)))
        labels = (rng.random(m) < p).astype(np.float32)
        return users, seqs, targets, p, labels

    def calibrate_bias(self, target_rate: float = 0.25) -> float:
        """The click bias that gives ~25% positives, as in the real train set."""
        rng = np.random.default_rng(self.cfg.seed + 7)
        m = min(20_000, max(self.cfg.n_train, 2000))
        p_user = self.user_activity / self.user_activity.sum()
        users = rng.choice(self.cfg.n_users, size=m, p=p_user)
        seqs = self.sequences(users, rng, cap=self.cfg.seq_pad, pad=self.cfg.seq_pad)
        taste = rng.random(m) < 0.5
        targets = np.where(taste, self.draw_taste_items(users, rng), self.draw_popular_items(m, rng))
        logit = self.click_logit(users, targets, seqs)
        lo, hi = -20.0, 20.0
        for _ in range(50):
            mid = (lo + hi) / 2
            rate = np.mean(1 / (1 + np.exp(-(logit + mid))))
            lo, hi = (mid, hi) if rate < target_rate else (lo, mid)
        return (lo + hi) / 2


# ---------- item content ----------

def _titles(world: World, rng) -> list:
    topics = list(TOPIC_WORDS.values())
    vocab = [topics[k % len(topics)].split() for k in range(world.cfg.n_topics)]
    titles = [""]
    for i in range(1, world.cfg.n_items + 1):
        if rng.random() < 0.01:
            titles.append("")  # real titles are sometimes empty
            continue
        words = list(rng.choice(vocab[world.topic[i]], size=rng.integers(2, 5)))
        if rng.random() < 0.15:
            words.append(str(rng.choice(vocab[rng.integers(world.cfg.n_topics)])))
        words += list(rng.choice(FILLER, size=rng.integers(1, 3)))
        rng.shuffle(words)
        titles.append(" ".join(words))
    return titles


def _tags(world: World, rng) -> np.ndarray:
    c = world.cfg
    per_topic = max((c.n_tags - 1) // c.n_topics, 1)
    tags = np.zeros((c.n_items + 1, C.TAGS_LEN), dtype=np.int64)
    for i in range(1, c.n_items + 1):
        k = rng.integers(1, C.TAGS_LEN + 1)
        topical = rng.random(k) < 0.75
        own = 1 + world.topic[i] * per_topic + rng.integers(0, per_topic, size=k)
        other = rng.integers(1, c.n_tags, size=k)
        tags[i, C.TAGS_LEN - k:] = np.where(topical, own, other)
    return tags


def _draw_cover(args) -> None:
    path, size, topic, n_topics, style, seed = args
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    import colorsys

    hue = (topic / n_topics + rng.normal(0, 0.02)) % 1.0
    bg = tuple(int(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.55 + 0.2 * rng.random(), 0.85))
    fg = tuple(int(255 * v) for v in colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.8, 0.35 + 0.4 * rng.random()))
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    s = size * (0.35 + 0.3 * rng.random())
    cx, cy = size * (0.3 + 0.4 * rng.random(2))
    box = [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]
    shape = SHAPES[style % len(SHAPES)]
    if shape == "circle":
        draw.ellipse(box, fill=fg)
    elif shape == "square":
        draw.rectangle(box, fill=fg)
    elif shape == "triangle":
        draw.polygon([(cx, cy - s / 2), (cx - s / 2, cy + s / 2), (cx + s / 2, cy + s / 2)], fill=fg)
    else:
        step = max(size // 8, 2)
        for x in range(0, size, 2 * step):
            draw.rectangle([x, 0, x + step - 1, size], fill=fg)
    noise = rng.normal(0, 12, size=(size, size, 3))
    arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    tmp = Path(str(path) + ".tmp")
    Image.fromarray(arr).save(tmp, format="JPEG", quality=85)
    tmp.replace(path)


def _write_images(world: World, out: Path, progress) -> None:
    c = world.cfg
    d = out / C.IMAGES_DIR
    d.mkdir(parents=True, exist_ok=True)
    jobs = [(d / C.image_name(i), c.image_size, int(world.topic[i]), c.n_topics, int(world.style[i]),
             c.seed * 1_000_003 + i) for i in range(1, c.n_items + 1)]
    if c.workers > 1 and len(jobs) > 2000:
        with ProcessPoolExecutor(c.workers) as ex:
            for _ in progress(ex.map(_draw_cover, jobs, chunksize=256), total=len(jobs), desc="covers"):
                pass
    else:
        for job in progress(jobs, desc="covers"):
            _draw_cover(job)


def _list_array(mat: np.ndarray, value_type) -> pa.Array:
    mat = np.ascontiguousarray(mat)
    offsets = np.arange(0, mat.size + 1, mat.shape[1], dtype=np.int32 if mat.size < 2**31 else np.int64)
    values = pa.array(mat.ravel(), type=value_type)
    if offsets.dtype == np.int64:
        return pa.LargeListArray.from_arrays(offsets, values).cast(pa.list_(value_type))
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _content_embedding(world: World, rng, dim: int, style_weight: float, noise: float) -> np.ndarray:
    """A 'provided' embedding that sees content (topic, and style if style_weight) but not behaviour."""
    d = world.cfg.latent_dim
    proj_t = rng.normal(size=(d, dim)) / np.sqrt(d)
    proj_s = rng.normal(size=(d, dim)) / np.sqrt(d)
    x = world.topic_vec[world.topic] @ proj_t + style_weight * world.style_vec[world.style] @ proj_s
    x = x + noise * rng.normal(size=x.shape) / np.sqrt(dim) * np.linalg.norm(x, axis=1, keepdims=True).mean()
    x = x.astype(np.float32)
    x[0] = 0
    return x


def _split_table(users, seqs, targets, labels, world: World, with_label: bool) -> pa.Table:
    cols = {
        C.USER_ID: pa.array(users + 1, type=pa.int64()),
        C.ITEM_SEQ: _list_array(seqs, pa.int64()),
        C.ITEM_ID: pa.array(targets, type=pa.int64()),
        C.LIKES: pa.array(world.likes_level[targets], type=pa.int64()),
        C.VIEWS: pa.array(world.views_level[targets], type=pa.int64()),
    }
    if with_label:
        cols[C.LABEL] = pa.array(labels, type=pa.float32())
    return pa.table(cols)


def refuse_overwrite(out) -> Path:
    """The sampler writes only into a new or empty folder, or over a previous sample (one that
    holds MARKER); never into or over a real data set or any other folder's files."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise KitError(f"--out {out} is a file, not a folder")
    resolved = out.resolve()
    for parent in resolved.parents:
        if (parent / C.CTR_DIR).is_dir() and not (parent / MARKER).is_file():
            raise KitError(f"--out {out} is inside the data set {parent} (it holds {C.CTR_DIR}/): "
                           "the sampler never writes into a data set; choose a new folder")
    if out.is_dir() and not (out / MARKER).is_file() and any(out.iterdir()):
        what = (f"a data set (it holds {C.CTR_DIR}/)" if (out / C.CTR_DIR).exists()
                else "a non-empty folder that the sampler did not make")
        raise KitError(f"--out {out} is {what}: the sampler writes only into a new or empty "
                       f"folder, or over a previous sample (marked by {MARKER}); choose a new folder")
    return out


def generate(out, cfg: SampleConfig = SampleConfig(), progress=None) -> dict:
    """Write the sample in the organisers' layout under `out`; return its summary.

    Refuses (KitError) an `out` that is not new, empty, or a previous sample (refuse_overwrite).
    """
    if progress is None:
        def progress(it, **_):
            return it
    out = refuse_overwrite(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `python -m mmctr sample`: synthetic data, safe to overwrite\n")
    (out / C.CTR_DIR).mkdir(parents=True, exist_ok=True)
    world = World(cfg)
    rng = np.random.default_rng(cfg.seed + 1)
    bias = world.calibrate_bias() if cfg.shape == "bernoulli" else 0.0
    n = cfg.n_items

    # items
    titles = _titles(world, rng)
    tags = _tags(world, rng)
    official = _content_embedding(world, rng, C.EMB_DIM, style_weight=0.7, noise=1.0)
    feature_cols = {
        C.ITEM_ID: pa.array(np.arange(1, n + 1), type=pa.int64()),
        C.ITEM_TITLE: pa.array(titles[1:], type=pa.string()),
        C.ITEM_TAGS: _list_array(tags[1:], pa.int64()),
        C.LIKES: pa.array(world.likes_level[1:], type=pa.int64()),
        C.VIEWS: pa.array(world.views_level[1:], type=pa.int64()),
        C.TXT_EMB: _list_array(_content_embedding(world, rng, C.BERT_DIM, 0.0, 1.0)[1:], pa.float32()),
        C.IMG_EMB: _list_array(_content_embedding(world, rng, C.CLIP_RN50_DIM, 1.0, 1.0)[1:], pa.float32()),
    }
    write_parquet(out / C.ITEM_FEATURE.relpath, pa.table(feature_cols))
    write_parquet(out / C.ITEM_INFO.relpath, pa.Table.from_arrays(
        [pa.array(np.arange(n + 1), type=pa.int64()), _list_array(tags, pa.int64()),
         _list_array(official, pa.float32())], schema=C.ITEM_INFO_ARROW))
    alt = {C.ITEM_ID: pa.array(np.arange(1, n + 1), type=pa.int64())}
    for j, name in enumerate(C.ALT_EMBS):
        alt[name] = _list_array(_content_embedding(world, rng, C.EMB_DIM, 0.7, 0.8 + 0.2 * j)[1:], pa.float32())
    write_parquet(out / C.ITEM_EMB_ALT.relpath, pa.table(alt))
    _write_images(world, out, progress)

    # user sequences (behaviour data for task1)
    users_all = np.arange(cfg.n_users)
    seq_all = world.sequences(users_all, rng, cap=min(100, 3 * cfg.seq_pad), pad=min(100, 3 * cfg.seq_pad))
    write_parquet(out / C.ITEM_SEQ_TABLE.relpath, pa.table({
        C.USER_ID: pa.array(users_all + 1, type=pa.int64()),
        C.ITEM_SEQ: _list_array(seq_all, pa.int64())}))

    # interactions
    summary = {"config": asdict(cfg)}
    if cfg.shape == "bernoulli":
        summary["click_bias"] = bias
    for table in progress(C.SPLITS, desc="splits"):
        m = {"train": cfg.n_train, "valid": cfg.n_valid, "test": cfg.n_test}[table.name]
        chunks = []
        for start in range(0, m, 500_000):
            chunks.append(world.interactions(min(500_000, m - start), rng, bias, with_p=table is not C.TRAIN))
        users, seqs, targets, p, labels = (None if x[0] is None else np.concatenate(x) for x in zip(*chunks))
        write_parquet(out / table.relpath,
                      _split_table(users, seqs, targets, labels, world, with_label=table is not C.TEST))
        summary[f"{table.name}_positive_rate"] = float(labels.mean())
        if table is not C.TRAIN:
            write_parquet(out / TRUTH_DIR / f"{table.name}.parquet",
                          pa.table({"p_click": pa.array(p, type=pa.float64()),
                                    C.LABEL: pa.array(labels, type=pa.float32())}))
            summary[f"{table.name}_oracle_auc"] = roc_auc(labels, p)
            summary[f"{table.name}_seq_oracle_auc"] = roc_auc(labels, world.seq_oracle_logit(targets, seqs))
    write_json(out / TRUTH_DIR / "summary.json", summary)
    return summary


def read_truth(data_root, split: str):
    """(p_click, label) of a generated split, from the side file the generator wrote."""
    import pyarrow.parquet as pq

    path = Path(data_root) / TRUTH_DIR / f"{split}.parquet"
    t = pq.read_table(path)
    return t.column("p_click").to_numpy(), t.column(C.LABEL).to_numpy()


def summary(data_root) -> dict:
    return json.loads((Path(data_root) / TRUTH_DIR / "summary.json").read_text())


def latent_recovery(data_root, emb: np.ndarray, ridge: float = 0.1, seed: int = 0) -> dict:
    """How much of the planted item latents a (n_items+1, d) embedding holds: held-out R² of a
    ridge regression from the embedding to the item vector, its topic part and its style part.
    A training-free measure of an item embedding on generated data (1 = all, 0 = none)."""
    cfg = SampleConfig(**summary(data_root)["config"])
    world = World(cfg)
    x = np.asarray(emb, dtype=np.float64)[1:]
    if len(x) != cfg.n_items:
        raise ValueError(f"embedding has {len(x)} items, the sample has {cfg.n_items}")
    idx = np.random.default_rng(seed).permutation(len(x))
    tr, te = idx[: len(x) * 3 // 4], idx[len(x) * 3 // 4:]
    x = np.c_[x, np.ones(len(x))]
    solve = np.linalg.solve(x[tr].T @ x[tr] + ridge * np.eye(x.shape[1]), x[tr].T)
    out = {}
    for name, y in (("item", world.item_vec[1:]), ("topic", world.topic_vec[world.topic[1:]]),
                    ("style", world.style_vec[world.style[1:]])):
        pred = x[te] @ (solve @ y[tr])
        out[name] = float(1 - ((pred - y[te]) ** 2).sum() / ((y[te] - y[te].mean(0)) ** 2).sum())
    return out

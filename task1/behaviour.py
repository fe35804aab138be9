"""Item vectors from behaviour: PPMI of item co-occurrence in user sequences, truncated SVD.

Sources (both allowed by the rules): item_seq.parquet (every user's history) and
train.parquet (each row's item_seq, plus the target item appended when the click label is 1).
Only train labels are read; valid.parquet and test.parquet are never opened.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from mmctr import contract as C
from mmctr.errors import KitError
from mmctr.io import read_parquet
from mmctr.paths import DataPaths

from .linalg import truncated_svd

CHUNK_VALUES = 2_000_000  # co-occurrence pairs are counted in slices of this many items (bounded temporaries)
MERGE_EVERY = 8  # slices' sparse counts are summed in groups of this many


def _lists(col, path, n_items: int):
    """A list column -> (values int32, offsets int64 (rows + 1)): row r is values[offsets[r]:
    offsets[r + 1]], padding zeros still in (dropped once sequences are drawn); a null list is
    empty. An id below 0 or above n_items is a KitError naming the file and the row."""
    col = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)) or \
            not pa.types.is_integer(col.type.value_type):
        raise KitError(f"{path}: column {C.ITEM_SEQ} must be a list of integer item ids, got {col.type}")
    values = pc.list_flatten(col).to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    if len(values):
        low, high = values.min(), values.max()  # two reductions, no (values,) temporaries on a valid file
        if low < 0 or high > n_items:
            i = int(np.flatnonzero((values < 0) | (values > n_items))[0])
            raise KitError(f"{path}: row {int(np.searchsorted(offsets, i, side='right')) - 1} of {C.ITEM_SEQ} "
                           f"holds item id {values[i]}; ids are 1..{n_items} (0 = padding)")
    return values.astype(np.int32), offsets


def sequences(paths: DataPaths, cfg, n_items: int):
    """[(values, offsets)] (see _lists) of every sequence source the config enables; and the files read."""
    out, read = [], []
    if cfg.item_seq:
        path = paths.require(C.ITEM_SEQ_TABLE)
        col = read_parquet(path, [C.ITEM_SEQ], "item_seq").column(C.ITEM_SEQ)
        out.append(_lists(col, path, n_items))
        read.append(path)
    if cfg.train_sequences:
        path = paths.require(C.TRAIN)
        t = read_parquet(path, [C.ITEM_SEQ, C.ITEM_ID, C.LABEL], "train")
        values, offsets = _lists(t.column(C.ITEM_SEQ), path, n_items)
        pos = np.flatnonzero(t.column(C.LABEL).to_numpy(zero_copy_only=False) > 0.5)
        target = t.column(C.ITEM_ID).to_numpy(zero_copy_only=False).astype(np.int64)[pos]
        bad = (target < 1) | (target > n_items)
        if bad.any():
            raise KitError(f"{path}: row {pos[np.flatnonzero(bad)[0]]} has {C.ITEM_ID} "
                           f"{target[bad][0]}; ids are 1..{n_items}")
        # the clicked target goes after its row's history (np.insert keeps equal positions in order)
        values = np.insert(values, offsets[pos + 1], target.astype(np.int32))
        added = np.zeros(len(offsets), np.int64)
        added[pos + 1] = 1
        out.append((values, offsets + np.cumsum(added)))
        read.append(path)
    return out, read


def _gather(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray):
    """(values, list ids) of the given rows (sorted), padding zeros dropped; list ids are global row
    numbers, so a pair never joins two rows."""
    lens = offsets[rows + 1] - offsets[rows]
    if len(rows) == len(offsets) - 1:
        idx = slice(None)
    else:
        firsts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        idx = np.arange(int(lens.sum()), dtype=np.int64) + np.repeat(offsets[rows] - firsts, lens)
    v = values[idx]
    p = np.repeat(rows.astype(np.int32 if len(offsets) < 2 ** 31 else np.int64), lens)
    keep = v > 0
    return (v, p) if keep.all() else (v[keep], p[keep])


def subsample(sources, cap: int, seed: int):
    """Whole sequences drawn at random (seeded) across all sources up to `cap` item occurrences
    (padding not counted), so the cost of co-occurrence counting and of the SVD stays bounded
    however long item_seq is; cap 0 or a smaller total keeps everything.
    sources: [(values, offsets)] (see _lists). Returns ([(values, list ids)], report)."""
    sizes = []
    for values, offsets in sources:
        nonzero = np.concatenate([[0], np.cumsum(values > 0, dtype=np.int64)])
        sizes.append(nonzero[offsets[1:]] - nonzero[offsets[:-1]])
    sizes_all = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    total = int(sizes_all.sum())
    report = {"max_occurrences": int(cap), "occurrences_total": total,
              "sequences_total": int((sizes_all > 0).sum())}
    take = np.ones(len(sizes_all), bool)
    if cap and total > cap:
        order = np.random.default_rng(seed).permutation(len(sizes_all))
        take[:] = False
        take[order[:int(np.searchsorted(np.cumsum(sizes_all[order]), cap, side="right"))]] = True
        report.update(subsampled=True, seed=int(seed), occurrences_used=int(sizes_all[take].sum()),
                      sequences_used=int((take & (sizes_all > 0)).sum()))
    else:
        report["subsampled"] = False
    out, start = [], 0
    for (values, offsets), size in zip(sources, sizes):
        rows = np.flatnonzero(take[start:start + len(size)] & (size > 0))
        out.append(_gather(values, offsets, rows))
        start += len(size)
    return out, report


def _merge(mats: list, shape) -> sp.csr_matrix:
    """Sum sparse matrices in one pass (duplicates summed by the COO -> CSR conversion)."""
    if len(mats) == 1:
        return mats[0]
    coos = [m.tocoo() for m in mats]
    return sp.coo_matrix((np.concatenate([c.data for c in coos]),
                          (np.concatenate([c.row for c in coos]), np.concatenate([c.col for c in coos]))),
                         shape=shape).tocsr()


def cooccurrence(seqs, n_items: int, window: int) -> sp.csr_matrix:
    """Symmetric (n+1, n+1) counts: items d <= window apart in one sequence add 1/d.

    Vectorised over all sequences at once: for each distance d, the values d apart with the same
    list id are a pair. Each slice's pairs are summed into a CSR; slices are merged in groups (one
    sort each, not one pass per slice), and the matrix is symmetrised once at the end."""
    shape = (n_items + 1, n_items + 1)
    done: list = []
    for values, parents in seqs:
        values = values.astype(np.int32, copy=False)
        for start in range(0, len(values), CHUNK_VALUES):
            stop = min(len(values), start + CHUNK_VALUES + window)  # overlap: pairs across the cut
            v, p = values[start:stop], parents[start:stop]
            rows, cols, w = [], [], []
            for d in range(1, window + 1):
                if d >= len(v):
                    break
                same = p[:-d] == p[d:]
                if start + CHUNK_VALUES < len(values):  # pairs starting in the overlap belong to the next slice
                    same[CHUNK_VALUES:] = False
                a, b = v[:-d][same], v[d:][same]
                ne = a != b
                rows.append(a[ne]), cols.append(b[ne])
                w.append(np.full(int(ne.sum()), 1.0 / d, dtype=np.float64))
            if rows:
                done.append(sp.coo_matrix((np.concatenate(w), (np.concatenate(rows), np.concatenate(cols))),
                                          shape=shape).tocsr())
            if len(done) >= MERGE_EVERY:
                done = [_merge(done, shape)]
    if not done:
        return sp.csr_matrix(shape, dtype=np.float64)
    upper = _merge(done, shape)
    return (upper + upper.T).tocsr()


def _rows_of(csr: sp.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(csr.shape[0], dtype=np.int32), np.diff(csr.indptr))


def _keep(csr: sp.csr_matrix, rows: np.ndarray, keep: np.ndarray, data: np.ndarray) -> sp.csr_matrix:
    """The entries of a CSR (row of each entry: `rows`) where `keep`, with new values; stays CSR."""
    per_row = np.bincount(rows[keep], minlength=csr.shape[0])
    indptr = np.concatenate([[0], np.cumsum(per_row)])
    return sp.csr_matrix((data[keep], csr.indices[keep], indptr), shape=csr.shape)


def drop_cold(co: sp.csr_matrix, cold: np.ndarray) -> sp.csr_matrix:
    """Remove the rows and columns of cold items (row 0 holds no counts: ids start at 1)."""
    if not cold[1:].any():
        return co
    rows = _rows_of(co)
    return _keep(co, rows, ~cold[rows] & ~cold[co.indices], co.data)


def ppmi(co: sp.csr_matrix, alpha: float = 0.75, shift: float = 1.0) -> sp.csr_matrix:
    """Positive PMI with context-distribution smoothing (counts^alpha) and a log(shift) offset."""
    co = sp.csr_matrix(co)
    row_sum = np.asarray(co.sum(axis=1)).ravel()
    ctx = row_sum ** alpha
    total, ctx_total = row_sum.sum(), ctx.sum()
    if total <= 0:
        return co
    with np.errstate(divide="ignore"):  # log(0) only for rows/columns without counts, never gathered
        log_row, log_ctx = np.log(row_sum).astype(np.float32), np.log(ctx).astype(np.float32)
    pmi = np.log(co.data).astype(np.float32)
    pmi += np.float32(np.log(ctx_total) - np.log(shift))
    rows = _rows_of(co)
    pmi -= log_row[rows]
    pmi -= log_ctx[co.indices]
    return _keep(co, rows, pmi > 0, pmi)


def behaviour_embeddings(paths: DataPaths, n_items: int, cfg, seed: int):
    """(emb (n+1, dim) float32, warm mask (n+1,), stats dict, files read); cfg: BehaviourCfg."""
    seqs, read = sequences(paths, cfg, n_items)
    counts = np.zeros(n_items + 1, dtype=np.int64)
    for values, _ in seqs:
        counts += np.bincount(values, minlength=n_items + 1)
    counts[0] = 0  # padding
    seqs, sampled = subsample(seqs, cfg.max_occurrences, seed)
    co = cooccurrence(seqs, n_items, cfg.window)
    del seqs
    cold = counts < cfg.min_count
    cold[0] = True
    co = drop_cold(co, cold)
    m = ppmi(co, shift=cfg.neg_shift)
    emb, explained = truncated_svd(m, cfg.dim, seed, niter=cfg.svd_iterations)
    warm = np.diff(m.indptr) > 0  # ppmi keeps positive entries only
    emb[~warm] = 0
    stats = {"sequences": sampled["sequences_total"], "item_occurrences": int(counts.sum()),
             "cooccurrence_sample": sampled, "cooccurrence_nnz": int(co.nnz), "ppmi_nnz": int(m.nnz),
             "warm_items": int(warm[1:].sum()),
             "cold_items": int(n_items - warm[1:].sum()), "svd_explained": round(explained, 4)}
    return emb, warm, stats, read

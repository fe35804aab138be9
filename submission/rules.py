"""`submission check`: the challenge's rules, checked against a run directory.

Evidence comes from three places: the run manifests (what each run read, which weights it
used, its config, the hashes of what it wrote), the files themselves (item_info,
prediction.csv, test.parquet) and the source code (scan.py). Every broken rule becomes a
Violation(rule, where, reason); the report lists them all rather than stopping at the first.
"""
from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmctr import contract as C
from mmctr import rundir as L
from mmctr.errors import KitError
from mmctr.io import file_sha256
from mmctr.paths import DataPaths, data_locations, is_inside
from mmctr.ledger import LEDGER
from mmctr.sample import TRUTH_DIR
from mmctr.tracks import (FIXED_DIN_ARCH_SHA256, FIXED_DIN_LOGITS, FIXED_DIN_LOGITS_TOL, REFREEZE, TASK1_TUNABLE,
                          Track, fixed_din_config, get_track, training_path_changes)

from .ledgers import check_ledgers
from .scan import iter_sources, local_imports, scan_file, tracked_sources

REPO_ROOT = Path(__file__).resolve().parent.parent
TASK2_CODE = "task2"  # the kit's CTR model code (repo-relative): also scanned for pretrained models
# Config keys that would mean more than one model or averaged predictions.
ENSEMBLE_KEYS = ("ensemble", "n_ensemble", "ensemble_size", "num_models", "n_models", "n_seeds",
                 "snapshot_ensemble", "average_checkpoints", "avg_checkpoints", "bagging", "swa")

RULES = {
    "manifest": "the run manifests exist, parse, and record what the rules need (with the ledger of what ran)",
    "single-model": "one CTR model: the task2 manifest records n_models == 1",
    "no-ensemble": "no averaging of predictions: predict loaded exactly one checkpoint, the trained one",
    "no-trees": "no tree or boosting library loaded or spawned by any run (its ledger), nor in any tracked .py/.ipynb",
    "no-pretrained-ctr": "no pretrained large model in the CTR model (task2 code and manifest)",
    "inputs-in-data": "every input lies in the data dir or the runs dir, or is declared model weights",
    "unverified-input": "every input is organiser data, a kit command's output (a manifest in the runs dir says "
                        "so) or pretrained weights; others only when named with --allow-input",
    "no-test-in-training": "test rows (by content) and test labels are never training inputs",
    "item-info": "the new item_info is 128-D, row i = item i, row 0 zero, items and tags as provided",
    "item-info-used": "task2 trained on the item_info that was checked (Task-1 tracks)",
    "fixed-din": "Task-1 track: the frozen baseline DIN (config, architecture, training code), "
                 "five hyperparameters tuned",
    "provided-embeddings": "Task-2 track: task2 trained on the provided item_info, unchanged",
    "provenance": "files are the ones the recorded runs wrote (sha256, re-scoring test rows with the checkpoint)",
    "prediction": "prediction.csv is complete and valid for the track and for this test set",
}


@dataclass(frozen=True)
class Violation:
    rule: str
    where: str
    reason: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.reason}"


@dataclass
class Report:
    track: str
    runs: str
    data_dir: str
    checked: list = field(default_factory=list)
    violations: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    rescored: dict = field(default_factory=dict)  # {"rows", "seed", "max_abs_diff", "tol"}
    allowed_inputs: list = field(default_factory=list)  # [{"path", "read_as", "sha256", "how"}]: --allow-input
    untracked: list = field(default_factory=list)  # repo files git does not track that the scan followed

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def broken(self) -> list:
        return sorted({v.rule for v in self.violations}, key=list(RULES).index)

    def add(self, rule: str, where, reason: str) -> None:
        self.violations.append(Violation(rule, str(where), reason))

    def warn(self, rule: str, where, reason: str) -> None:
        self.warnings.append(Violation(rule, str(where), reason))

    def to_dict(self) -> dict:
        return {"track": self.track, "runs": self.runs, "data_dir": self.data_dir, "ok": self.ok,
                "checked": self.checked, "broken": self.broken,
                "violations": [asdict(v) for v in self.violations],
                "warnings": [asdict(v) for v in self.warnings], "rescored": self.rescored,
                "allowed_inputs": self.allowed_inputs, "untracked": self.untracked}

    def lines(self) -> list:
        out = [f"check track {self.track}: runs {self.runs}, data {self.data_dir}"]
        out += [f"FAIL {v}" for v in self.violations]
        out += [f"warn {w}" for w in self.warnings]
        out += [f"info allowed input (not verified by the kit): {a['read_as']} sha256 {a['sha256']}"
                + (f", made by: {a['how']}" if a["how"] else "") for a in self.allowed_inputs]
        if self.rescored:
            rs = self.rescored
            out.append(f"info re-scored {rs['rows']} test rows with the checkpoint (seed {rs['seed']}): "
                       f"max |diff| {rs['max_abs_diff']:.2e} (tol {rs['tol']:g})")
        passed = [r for r in self.checked if r not in self.broken]
        if passed:
            out.append(f"pass {', '.join(passed)}")
        if self.ok:
            out.append(f"ok: {len(self.checked)} rules checked, none broken")
        else:
            out.append(f"{len(self.violations)} violation(s) of {len(self.broken)} rule(s): "
                       f"{', '.join(self.broken)}")
        return out


# ---------------------------------------------------------------------------- helpers

def _resolve(p) -> Path:
    return Path(p).expanduser().resolve()


def _same(a, b) -> bool:
    """Config value equality: numbers by value (1e-3 == 0.001, 0 == 0.0), lists elementwise."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().lower() == b.strip().lower()
    return a == b


def _load(report: Report, path: Path, kind: str, rel) -> dict | None:
    try:
        doc = L.read_manifest(path)
    except KitError as exc:
        report.add("manifest", rel(path), str(exc))
        return None
    if not isinstance(doc, dict) or doc.get(L.KIND) != kind:
        got = doc.get(L.KIND) if isinstance(doc, dict) else type(doc).__name__
        report.add("manifest", rel(path), f"kind is {got!r}, expected {kind!r}")
        return None
    return doc


def _runtime_keys() -> set:
    from task2.config import RUNTIME_KEYS

    return set(RUNTIME_KEYS)


# ---------------------------------------------------------------------------- the check

class _Ctx:
    def __init__(self, track, runs, data_dir):
        self.track: Track = get_track(track)
        self.paths = DataPaths.resolve(data_dir)
        self.data_locations = data_locations(self.paths.root)
        runs_path = Path(runs).expanduser()
        if not runs_path.is_dir():
            raise KitError(f"runs directory not found: {runs_path} (run `make task1 task2` first)")
        self.run = L.TrackDir.of(runs_path)
        self.report = Report(self.track.name, str(runs_path), str(data_dir))
        self._sha: dict = {}
        self.produced = produced_sha256(self.run.runs)
        self.allowed: dict = {}  # sha256 -> (path given, how it was made)

    def allow(self, p, sha: str) -> None:
        given, how = self.allowed[sha]
        entry = {"path": str(given), "read_as": self.rel(p), "sha256": sha, "how": how}
        if entry not in self.report.allowed_inputs:
            self.report.allowed_inputs.append(entry)

    @property
    def run2(self) -> Path:
        return self.run.runs / L.TASK2_DIR

    def rel(self, p) -> str:
        p = Path(p)
        for root, name in ((self.run.runs, "$RUNS"), (self.paths.root, "$DATA")):
            if is_inside(_resolve(p), (root,)):
                return f"{name}/{_resolve(p).relative_to(root)}"
        return str(p)

    def sha(self, p: Path) -> str:
        p = _resolve(p)
        if p not in self._sha:
            self._sha[p] = file_sha256(p)
        return self._sha[p]

    def in_data(self, p: Path) -> bool:
        return is_inside(p, self.data_locations)

    def data_file(self, raw: str, base: Path) -> Path:
        """A path recorded in a manifest: absolute (older runs), else relative to the data root
        when it names a file there, else relative to `base` (the manifest's own folder)."""
        p = Path(raw).expanduser()
        if p.is_absolute():
            return p
        if (self.paths.root / p).exists():
            return self.paths.root / p
        return base / p


def produced_sha256(runs: Path) -> set:
    """sha256 of every file a kit command's manifest under `runs` says it wrote (outputs,
    checkpoints, predictions); only a manifest whose ledger a kit command started, with no tree
    library loaded, vouches for what it lists."""
    from .ledgers import vouches

    out = set()
    for path in sorted(runs.rglob("*manifest.json")):
        try:
            doc = L.read_manifest(path)
        except (KitError, OSError, RecursionError, ValueError):
            continue  # the manifest rule reports the run's own manifests
        if not isinstance(doc, dict) or doc.get(L.KIND) not in ("task1", "task2") or not vouches(doc.get(LEDGER)):
            continue
        outputs = doc.get(L.OUTPUTS) if isinstance(doc.get(L.OUTPUTS), dict) else {}
        out |= {v for v in outputs.values() if isinstance(v, str)}
        for key in (L.CHECKPOINT, L.PREDICTION):
            if isinstance(doc.get(key), dict) and isinstance(doc[key].get(L.SHA256), str):
                out.add(doc[key][L.SHA256])
    return out


def parse_allowed(items) -> dict:
    """--allow-input FILE[=how it was made] (repeatable) -> {sha256: (FILE, how)}."""
    out = {}
    for item in items or ():
        path, _, how = str(item).partition("=")
        p = Path(path).expanduser()
        if not p.is_file():
            raise KitError(f"--allow-input {path}: not a file")
        out[file_sha256(p)] = (str(p.resolve()), how.strip() or None)
    return out


def check(track, runs, data_dir, code_dirs=None, task2_code=None, din_config=None, allow_inputs=None) -> Report:
    """Check every rule for `track` (a Track or its name) on the run directory `runs`.

    The scan always covers every git-tracked .py/.ipynb of the repo; `code_dirs` / `task2_code`
    only add places, and are recorded as warnings (rule "scope") with `din_config`, which is
    ignored: the fixed DIN is frozen in mmctr.tracks.
    """
    ctx = _Ctx(track, runs, data_dir)
    ctx.allowed = parse_allowed(allow_inputs)
    r = ctx.report
    r.checked = [k for k in RULES if not (
        (k in ("item-info", "item-info-used", "fixed-din") and not ctx.track.new_embeddings) or
        (k == "fixed-din" and ctx.track.custom_model) or
        (k == "provided-embeddings" and ctx.track.new_embeddings))]
    for opt, given in (("--code", code_dirs), ("--task2-code", task2_code)):
        if given:
            r.warn("scope", opt, f"scan also covers {', '.join(map(str, given))}; every tracked .py/.ipynb "
                   "of the repo is scanned regardless")
    if din_config:
        r.warn("scope", "--din-config", f"{din_config} ignored: the fixed DIN's values are frozen in "
               "mmctr/tracks.py")

    t2 = _load(r, ctx.run.task2_manifest, "task2", ctx.rel)
    t1 = _load(r, ctx.run.task1_manifest, "task1", ctx.rel) if ctx.track.new_embeddings else None

    check_ledgers(ctx, t1, t2)  # what ran, first; the source scan below is a lint
    _check_code(ctx, code_dirs, task2_code)
    _check_startup(ctx)
    if t2 is not None:
        _check_task2_manifest(ctx, t2)
        _check_inputs(ctx, t1, t2)
    elif t1 is not None:
        _check_inputs(ctx, t1, None)
    _check_test_rows(ctx, t2)
    if ctx.track.new_embeddings:
        _check_item_info(ctx, t1, t2)
        if not ctx.track.custom_model and t2 is not None:
            _check_fixed_din(ctx, t2)
    elif t2 is not None:
        _check_provided_embeddings(ctx, t2)
    _check_prediction(ctx, t2)
    return r


def _check_startup(ctx: _Ctx) -> None:
    """A warning, never a failure: start-up hooks in this environment that nothing vouches for."""
    from .startup import VOUCH, unvouched

    found = unvouched()
    if found:
        ctx.report.warn("startup", "sys.path", f"{len(found)} file(s) run at interpreter start-up: "
                        + "; ".join(f"{p} ({why})" for p, why in found) + f". {VOUCH}")


def _check_code(ctx: _Ctx, code_dirs, task2_code) -> None:
    """Tree/boosting libraries anywhere in the code; pretrained models in the CTR code."""
    r = ctx.report
    files: dict = {}  # resolved path -> (shown name, scan for pretrained models too)
    tracked, links = tracked_sources(REPO_ROOT)
    for link in links:
        r.warn("no-trees", link, "a symlinked source file: not followed, not scanned")
    for rel in tracked:
        p = REPO_ROOT / rel
        files[_resolve(p)] = (rel, rel.split("/")[0] == TASK2_CODE)
    extra = [(Path(d), False) for d in code_dirs or ()] + [(Path(d), True) for d in task2_code or ()]
    for d, ctr in extra:
        if not d.exists():
            r.warn("scope", d, "code path does not exist; nothing scanned there")
        for p in iter_sources(d):
            shown, was_ctr = files.get(_resolve(p), (_display(p), False))
            files[_resolve(p)] = (shown, was_ctr or ctr)
    queue = list(files)
    while queue:  # follow static imports into repo modules git does not track (or ignores)
        src = queue.pop()
        for dep in local_imports(src, REPO_ROOT):
            if dep not in files:
                files[dep] = (_display(dep), files[src][1])
                queue.append(dep)
                r.warn("scope", files[dep][0], f"not tracked by git, imported by {files[src][0]}: scanned too")
    r.untracked = _untracked(files)
    for p, (shown, ctr_code) in files.items():
        for h in scan_file(p, pretrained=ctr_code, display=shown):
            if h.kind == "tree":
                r.add("no-trees", h.where, h.detail)
            elif h.kind == "pretrained":
                r.add("no-pretrained-ctr", h.where, h.detail + " in the CTR model's code")
            else:
                r.warn("no-trees", h.where, h.detail)


def _untracked(files: dict) -> list:
    """Repo-relative names of the scanned files git does not track (pack ships them too)."""
    import subprocess

    try:
        res = subprocess.run(["git", "ls-files", "-z", "--cached"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    if res.returncode:
        return []  # not a git checkout: pack walks the folder, nothing is left out for being untracked
    cached = set(res.stdout.split("\0"))
    return sorted(shown for p, (shown, _) in files.items()
                  if is_inside(p, (REPO_ROOT.resolve(),)) is not None and shown not in cached)


def _display(p: Path) -> str:
    try:
        return str(_resolve(p).relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def _check_task2_manifest(ctx: _Ctx, t2: dict) -> None:
    r, where = ctx.report, ctx.rel(ctx.run.task2_manifest)
    n = t2.get(L.N_MODELS)
    if n is None:
        r.add("single-model", f"{where}:{L.N_MODELS}", "not recorded; one CTR model must be declared")
    elif n != 1:
        r.add("single-model", f"{where}:{L.N_MODELS}",
              f"{n} models; the rules allow one neural network trained end to end (no ensembles)")
    cfg = t2.get(L.CONFIG)
    if not isinstance(cfg, dict):
        r.add("manifest", f"{where}:{L.CONFIG}", "missing: the full model and training config")
        cfg = {}
    for key in ENSEMBLE_KEYS:
        v = cfg.get(key)
        if v not in (None, False, 0, 1, "", "none", [], {}):
            rule = "single-model" if key in ("num_models", "n_models", "n_seeds", "bagging") else "no-ensemble"
            r.add(rule, f"{where}:{L.CONFIG}.{key}", f"= {v!r}: ensembles and averaged models are not allowed")
    pre = t2.get(L.PRETRAINED)
    if pre is None:
        r.add("manifest", f"{where}:{L.PRETRAINED}", "not recorded; must be [] for the CTR model")
    elif pre:
        names = ", ".join(str(m.get("name", m) if isinstance(m, dict) else m) for m in pre)
        r.add("no-pretrained-ctr", f"{where}:{L.PRETRAINED}",
              f"the CTR model used pretrained weights ({names}); pretrained models may only "
              "extract item features in Task 1")
    if t2.get(L.MODELS):
        r.add("no-pretrained-ctr", f"{where}:{L.MODELS}",
              "the CTR run declares pretrained models; they are allowed in Task 1 only")
    ck = t2.get(L.CHECKPOINT)
    if isinstance(ck, dict) and ck.get(L.PATH):
        p = ctx.data_file(ck[L.PATH], ctx.run2)
        if not p.is_file():
            r.add("provenance", f"{where}:{L.CHECKPOINT}", f"checkpoint {ctx.rel(p)} is missing: the "
                  "prediction cannot be verified without it (keep the run's best.pt)")
        elif not ck.get(L.SHA256) or ctx.sha(p) != ck[L.SHA256]:
            r.add("provenance", ctx.rel(p), "checkpoint changed after training (sha256 differs from the manifest)")
    else:
        r.add("manifest", f"{where}:{L.CHECKPOINT}", "not recorded: task2 train did not finish")


def _manifest_inputs(ctx: _Ctx, doc: dict, base: Path, where: str) -> dict:
    """{resolved path: sha256} of every file a run read (its inputs and item_info entry)."""
    inputs = doc.get(L.INPUTS)
    if not isinstance(inputs, dict):
        if where:
            ctx.report.add("manifest", f"{where}:{L.INPUTS}", "must map each file read to its sha256")
        inputs = {}
    out = {}
    for raw, sha in inputs.items():
        out[str(raw)] = (ctx.data_file(str(raw), base), sha)
    info = doc.get(L.ITEM_INFO)
    if isinstance(info, dict) and info.get(L.PATH):
        p = _item_info_path(ctx, info)
        out.setdefault(str(info[L.PATH]), (p, info.get(L.SHA256)))
    return out


def _item_info_path(ctx: _Ctx, info: dict) -> Path:
    return L.resolve_located(info, ctx.paths.root, ctx.run2)


def _declared_weights(ctx: _Ctx, t1: dict | None) -> tuple[set, list, set]:
    """(sha256s, folders/files, precomputed sha256s) of the pretrained weights task1 declares."""
    declared_sha, declared_src, precomputed_sha = set(), [], set()
    if t1 is None:
        return declared_sha, declared_src, precomputed_sha
    models = t1.get(L.MODELS)
    if not isinstance(models, list):
        ctx.report.add("manifest", f"{ctx.rel(ctx.run.task1_manifest)}:{L.MODELS}",
                       "must list the pretrained weights used ([] if none)")
        models = []
    precomputed_sha |= {m.get(L.SHA256) for m in models if isinstance(m, dict) and m.get("kind") == "precomputed"}
    for m in models:
        if isinstance(m, dict) and m.get("kind") != "precomputed":  # a precomputed file vouches for nothing
            if m.get(L.SHA256):
                declared_sha.add(m[L.SHA256])
            for key in ("path", "source"):  # where the weights live ("source" may be "package:...")
                if isinstance(m.get(key), str) and Path(m[key]).expanduser().is_absolute():
                    declared_src.append(_resolve(m[key]))
    return declared_sha, declared_src, precomputed_sha


def _check_task2_reads(ctx: _Ctx, t2: dict, test_like: set) -> None:
    """task2 reads train, valid and one item_info of this data dir (or task1's): nothing else."""
    r, truth = ctx.report, ctx.paths.root / TRUTH_DIR
    read = {_resolve(p): (raw, sha) for raw, (p, sha) in _manifest_inputs(ctx, t2, ctx.run2, "").items()}
    where = f"{ctx.rel(ctx.run.task2_manifest)}:{L.INPUTS}"
    tables = {_resolve(p) for p in (ctx.paths.table(C.TRAIN), ctx.paths.table(C.VALID), ctx.paths.table(C.TEST),
                                    ctx.paths.table(C.ITEM_INFO), ctx.run.item_info)}
    for table in (C.TRAIN, C.VALID):
        if _resolve(ctx.paths.table(table)) not in read:
            r.add("inputs-in-data", where, f"does not record {table.relpath} of this data dir as read: "
                  "the CTR model must train on the provided data")
    info = t2.get(L.ITEM_INFO) if isinstance(t2.get(L.ITEM_INFO), dict) else {}
    if info.get(L.PATH):
        tables.add(_resolve(_item_info_path(ctx, info)))
    for p, (raw, sha) in read.items():  # a test-like input is reported under no-test-in-training
        if p not in tables and not is_inside(p, (_resolve(truth),)) and not (sha and sha in test_like):
            r.add("inputs-in-data", f"{where}[{raw}]", "task2 reads only train, valid and its "
                  "item_info; another input means training on other data")


def _check_inputs(ctx: _Ctx, t1: dict | None, t2: dict | None) -> None:
    r = ctx.report
    test_path = ctx.paths.table(C.TEST)
    test_sha = ctx.sha(test_path) if test_path.is_file() else None
    truth = ctx.paths.root / TRUTH_DIR
    truth_shas = {ctx.sha(p) for p in truth.glob("*.parquet")} if truth.is_dir() else set()
    declared_sha, declared_src, precomputed_sha = _declared_weights(ctx, t1)
    if t2 is not None and isinstance(t2.get(L.INPUTS), dict):
        _check_task2_reads(ctx, t2, truth_shas | {test_sha})
    for doc, mpath, may_use_weights in ((t1, ctx.run.task1_manifest, True),
                                        (t2, ctx.run.task2_manifest, False)):
        if doc is None:
            continue
        where = ctx.rel(mpath)
        for raw, (p, sha) in _manifest_inputs(ctx, doc, mpath.parent, where).items():
            shown = f"{where}:{L.INPUTS}[{raw}]"
            if _resolve(p) == _resolve(test_path) or (sha and sha == test_sha):
                r.add("no-test-in-training", shown,
                      "reads test.parquet; test rows must not be used in training")
            elif is_inside(_resolve(p), (_resolve(truth),)) or (sha and sha in truth_shas):
                r.add("no-test-in-training", shown,
                      "reads the sample's true labels/click probabilities (test labels)")
            if ctx.in_data(p):  # the organisers' copy must be the very file the run read
                if p.is_dir() and str(sha or "").startswith("stat-fingerprint:"):
                    continue  # the covers folder: task1 records it by a stat fingerprint, not a file hash
                if not p.is_file():
                    r.add("inputs-in-data", shown, f"{ctx.rel(p)} is not in this data dir: the run read "
                          "a file the organisers' data does not have")
                elif sha != ctx.sha(p):
                    r.add("inputs-in-data", shown, f"{ctx.rel(p)} in this data dir is not the file the run "
                          "read (sha256 differs from the manifest): trained on modified data")
                continue
            if sha and sha in ctx.produced:  # written by a kit command whose manifest is in the runs dir
                continue
            if may_use_weights and ((sha and sha in declared_sha) or
                                    any(_resolve(p) == s or is_inside(_resolve(p), (s,)) for s in declared_src)):
                continue
            if sha and sha in ctx.allowed:
                ctx.allow(p, sha)
                continue
            if shown in {v.where for v in r.violations}:
                continue  # already a test file (no-test-in-training): one failure per input
            if is_inside(_resolve(p), (ctx.run.runs,)) is not None or (may_use_weights and sha in precomputed_sha):
                r.add("unverified-input", shown, f"{ctx.rel(p)} (sha256 {str(sha)[:12]}) is neither organiser data "
                      "nor the output of a kit command whose manifest is in the runs dir; pass `--allow-input "
                      "FILE=how it was made` to submit it, named, for the organisers to judge")
                continue
            why = ("outside the data dir and the runs dir, and not declared model weights"
                   if may_use_weights else
                   "outside the data dir and the runs dir (the CTR run may read nothing else)")
            r.add("inputs-in-data", shown, f"{ctx.rel(p)} is {why}")


def _check_test_rows(ctx: _Ctx, t2: dict | None) -> None:
    """Test rows copied into the training data: the feature tuple of every test row, hashed,
    against every row of train and valid (and any other table task2 recorded as read)."""
    from mmctr.io import read_parquet_schema

    from .overlap import FEATURES, copied_rows

    test_path = ctx.paths.table(C.TEST)
    if not test_path.is_file():
        return
    tables = {_resolve(ctx.paths.table(C.TRAIN)), _resolve(ctx.paths.table(C.VALID))}
    if t2 is not None:
        for _, (p, _sha) in _manifest_inputs(ctx, t2, ctx.run2, "").items():
            if p.suffix == ".parquet" and p.is_file() and _resolve(p) != _resolve(test_path):
                tables.add(_resolve(p))
    for p in sorted(tables):
        try:
            if not p.is_file() or not set(FEATURES) <= set(read_parquet_schema(p, what=p.stem).names):
                continue
            n = copied_rows(test_path, p)
        except KitError as exc:
            ctx.report.warn("no-test-in-training", ctx.rel(p), f"not compared with the test rows: {exc}")
            continue
        if n:
            ctx.report.add("no-test-in-training", ctx.rel(p),
                           f"{n} test rows appear in it with the same ({', '.join(FEATURES)}): test rows "
                           "must not be used in training")


def _check_item_info(ctx: _Ctx, t1: dict | None, t2: dict | None) -> None:
    from mmctr.validate import validate_table

    r = ctx.report
    path = ctx.run.item_info
    where = ctx.rel(path)
    if not path.is_file():
        r.add("item-info", where, "missing: task1 must write the new item_info (run `make task1`)")
        return
    problems = validate_table(path, C.ITEM_INFO, label=where)
    for v in problems:
        r.add("item-info", where, str(v).split(": ", 1)[-1] if str(v).startswith(where) else str(v))
    official = ctx.paths.table(C.ITEM_INFO)
    if not problems and official.is_file():
        from mmctr.io import read_parquet_metadata
        from mmctr.item_info import read_item_info
        import numpy as np

        n_new = read_parquet_metadata(path, what="item_info").num_rows
        n_off = read_parquet_metadata(official, what="item_info").num_rows
        if n_new != n_off:
            r.add("item-info", where, f"{n_new} rows, the provided item_info has {n_off}: "
                  "row i must hold item i for every provided item (misaligned)")
        else:
            tags, _ = read_item_info(path)
            tags_off, _ = read_item_info(official)
            bad = np.flatnonzero((tags != tags_off).any(axis=1))
            if bad.size:
                r.add("item-info", f"{where}:{C.ITEM_TAGS}",
                      f"row {bad[0]} differs from the provided item_tags ({bad.size} rows): only "
                      f"{C.ITEM_EMB} may change, rows must stay aligned with the provided items")
    sha = ctx.sha(path)
    if t1 is not None:
        outs = t1.get(L.OUTPUTS) or {}
        recorded = next((v for k, v in outs.items()
                         if _resolve(ctx.data_file(k, ctx.run.task1_manifest.parent)) == _resolve(path)), None)
        if recorded is None:
            r.warn("provenance", f"{ctx.rel(ctx.run.task1_manifest)}:{L.OUTPUTS}",
                   f"does not record {where}; cannot prove task1 wrote it")
        elif recorded != sha:
            r.add("provenance", where, "changed after task1 wrote it (sha256 differs from its manifest)")
    if t2 is not None:
        used = t2.get(L.ITEM_INFO)
        if not isinstance(used, dict) or not used.get(L.SHA256):
            r.add("manifest", f"{ctx.rel(ctx.run.task2_manifest)}:{L.ITEM_INFO}",
                  "not recorded: which item_info task2 trained on")
        elif used[L.SHA256] != sha:
            r.add("item-info-used", f"{ctx.rel(ctx.run.task2_manifest)}:{L.ITEM_INFO}",
                  f"task2 trained on {used.get(L.PATH)}, not on the checked {where} (sha256 differs)")


def _check_fixed_din(ctx: _Ctx, t2: dict) -> None:
    """The run's recorded config against the frozen values (mmctr.tracks), then the trained
    network's architecture against the fixed DIN's."""
    r, where = ctx.report, ctx.rel(ctx.run.task2_manifest)
    fixed = fixed_din_config()
    cfg = t2.get(L.CONFIG) if isinstance(t2.get(L.CONFIG), dict) else {}
    tunable = ", ".join(TASK1_TUNABLE)
    if cfg.get("model") != fixed["model"]:
        r.add("fixed-din", f"{where}:{L.CONFIG}.model", f"= {cfg.get('model')!r}; the Task-1 track trains "
              f"the fixed {fixed['model']!r}")
    frozen = {**fixed["net"], **fixed["train"]}
    for key, value in frozen.items():
        if key in TASK1_TUNABLE:
            continue
        if key not in cfg:
            r.add("fixed-din", f"{where}:{L.CONFIG}.{key}", f"missing; the fixed DIN has {key} = {value!r}")
        elif not _same(cfg[key], value):
            r.add("fixed-din", f"{where}:{L.CONFIG}.{key}",
                  f"= {cfg[key]!r}, the fixed DIN has {value!r}; the Task-1 track may change only {tunable}")
    ignore = set(frozen) | {"model", L.CONFIG_SOURCE} | _runtime_keys()
    for key in sorted(set(cfg) - ignore):
        r.add("fixed-din", f"{where}:{L.CONFIG}.{key}",
              "is not a hyperparameter of the fixed DIN; the Task-1 track may change only " + tunable)
    _check_resumed(ctx, t2, tunable)
    _check_din_architecture(ctx, t2, cfg)
    _check_training_path(ctx, t2)


def _check_training_path(ctx: _Ctx, t2: dict) -> None:
    """The fixed DIN's training code, in this checkout and as the run's ledger recorded it,
    against the frozen hashes (mmctr.tracks.FIXED_DIN_SOURCES)."""
    r = ctx.report
    why_not = ("the Task-1 track trains with the kit's own trainer, data pipeline, optimizer, loss, "
               f"model and checkpoint code (after an intended kit change: `{REFREEZE}`)")
    for rel, why in training_path_changes():
        r.add("fixed-din", rel, f"differs from the fixed DIN's training code ({why}): {why_not}")
    led = t2.get(LEDGER)
    if isinstance(led, dict) and isinstance(led.get("sources"), dict):
        where = f"{ctx.rel(ctx.run.task2_manifest)}:{LEDGER}.sources"
        for rel, why in training_path_changes(recorded=led["sources"]):
            r.add("fixed-din", f"{where}[{rel}]", f"the run trained with other code ({why}): {why_not}")


def _check_resumed(ctx: _Ctx, t2: dict, tunable: str) -> None:
    """A key changed on --resume trained part of the run with another value: the final config
    shows only the last one, the `resumed` record both."""
    r, where = ctx.report, f"{ctx.rel(ctx.run.task2_manifest)}:{L.RESUMED}"
    resumed = t2.get(L.RESUMED, [])
    if not isinstance(resumed, list) or not all(isinstance(e, dict) and isinstance(e.get("changed", {}), dict)
                                                for e in resumed):
        r.add("fixed-din", where, "unreadable: not a list of {from_epoch, changed: {key: [old, new]}}")
        return
    for entry in resumed:
        for key, change in entry.get("changed", {}).items():
            if key not in TASK1_TUNABLE:
                r.add("fixed-din", f"{where}.{key}",
                      f"changed on --resume ({change!r}) after epoch {entry.get('from_epoch')!r}: part of the run "
                      f"trained with a value the fixed DIN does not have; the Task-1 track may change only {tunable}")
            else:
                r.warn("fixed-din", f"{where}.{key}",
                       f"changed on --resume ({change!r}) after epoch {entry.get('from_epoch')!r}: the run trained "
                       "with two values (a hand-made schedule), the manifest's config names only the last")


def _load_run_checkpoint(ctx: _Ctx, t2: dict):
    """(state, items) of the run's checkpoint over the item_info it trained on, or a reason."""
    from mmctr.rundir import load_checkpoint
    from task2.data import ItemTable

    ck = t2.get(L.CHECKPOINT) if isinstance(t2.get(L.CHECKPOINT), dict) else {}
    info = t2.get(L.ITEM_INFO) if isinstance(t2.get(L.ITEM_INFO), dict) else {}
    if not ck.get(L.PATH) or not ck.get(L.SHA256) or not info.get(L.PATH):
        return None, None, "the manifest records no checkpoint or item_info"
    path = ctx.data_file(ck[L.PATH], ctx.run2)
    if not path.is_file():
        return None, None, f"checkpoint {ctx.rel(path)} is missing"
    try:
        state = load_checkpoint(path, sha256=ck[L.SHA256])
        items = ItemTable.load(_item_info_path(ctx, info))
    except KitError as exc:
        return None, None, str(exc)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or \
            not isinstance(state.get("model_args"), dict):
        return None, None, f"{ctx.rel(path)} holds no model/model_args (not a task2 checkpoint)"
    return state, items, None


def _check_din_architecture(ctx: _Ctx, t2: dict, cfg: dict) -> None:
    from .fingerprint import build_fixed_din, fingerprint, forward_fingerprint, shapes

    r = ctx.report
    state, items, why = _load_run_checkpoint(ctx, t2)
    where = ctx.rel(ctx.run.task2.best) if state is None else \
        ctx.rel(ctx.data_file(t2[L.CHECKPOINT][L.PATH], ctx.run2))
    if state is None:
        r.add("fixed-din", where, f"cannot verify the trained network's architecture: {why}")
        return
    try:
        dropout = float(cfg.get("net_dropout", 0.1))
        ref = build_fixed_din(items, dropout if 0 <= dropout < 1 else 0.1)
    except KitError as exc:
        r.add("fixed-din", where, f"the fixed DIN cannot be built over this item_info: {exc}")
        return
    fp = fingerprint(ref, items.n_items, items.n_tags)
    if fp["sha256"] != FIXED_DIN_ARCH_SHA256:
        r.add("fixed-din", "task2/models/din.py",
              f"the DIN code builds another network than the fixed DIN (architecture fingerprint "
              f"{fp['sha256'][:12]}, frozen {FIXED_DIN_ARCH_SHA256[:12]}): the Task-1 track may not change "
              "the CTR model code")
    logits = forward_fingerprint()
    gap = max(abs(a - b) for a, b in zip(logits, FIXED_DIN_LOGITS))
    if len(logits) != len(FIXED_DIN_LOGITS) or gap > FIXED_DIN_LOGITS_TOL:
        r.add("fixed-din", "task2/models/din.py",
              f"the DIN code computes another function than the fixed DIN (logits on the frozen synthetic "
              f"batch differ by {gap:.2e}, tolerance {FIXED_DIN_LOGITS_TOL:g}): the Task-1 track may not "
              "change the CTR model code")
    got = shapes(state["model"], items.n_items, items.n_tags)
    if got != fp["state"]:
        want = {n: s for n, s, _ in fp["state"]}
        have = {n: s for n, s, _ in got}
        diff = sorted(set(want) ^ set(have)) or sorted(n for n in want if want[n] != have.get(n))
        n_params = sum(int(t.numel()) for t in state["model"].values() if hasattr(t, "numel"))
        r.add("fixed-din", where,
              f"the trained network differs from the fixed DIN ({n_params:,} values in the checkpoint; "
              f"differing tensors: {', '.join(diff[:5])}): the Task-1 track may not change the architecture")
    margs = state["model_args"]
    net = margs.get("config") if isinstance(margs.get("config"), dict) else {}
    for key, value in fixed_din_config()["net"].items():
        if key not in TASK1_TUNABLE and not _same(net.get(key), value):
            r.add("fixed-din", f"{where}:model_args.config.{key}",
                  f"= {net.get(key)!r}, the fixed DIN has {value!r}")
    if margs.get("model") != "din":
        r.add("fixed-din", f"{where}:model_args.model", f"= {margs.get('model')!r}, not the fixed 'din'")


def _check_provided_embeddings(ctx: _Ctx, t2: dict) -> None:
    r, where = ctx.report, ctx.rel(ctx.run.task2_manifest)
    official = ctx.paths.require(C.ITEM_INFO)
    used = t2.get(L.ITEM_INFO)
    if not isinstance(used, dict) or not used.get(L.SHA256):
        r.add("manifest", f"{where}:{L.ITEM_INFO}", "not recorded: which item_info task2 trained on")
        return
    if used[L.SHA256] != ctx.sha(official):
        r.add("provided-embeddings", f"{where}:{L.ITEM_INFO}",
              f"task2 trained on {used.get(L.PATH)}, which differs from the provided {ctx.rel(official)}; "
              "the Task-2 track must keep the provided embeddings (use track task1_2 for new ones)")


def _check_loaded(ctx: _Ctx, t2: dict, pred: dict, mw: str) -> None:
    """no-ensemble on what predict loaded: one checkpoint, the trained one, the file on disk."""
    r = ctx.report
    loaded = pred.get(L.CHECKPOINTS_LOADED)
    key = f"{mw}:{L.PREDICTION}.{L.CHECKPOINTS_LOADED}"
    if not isinstance(loaded, list):
        r.add("no-ensemble", key, "not recorded: which checkpoints task2 predict loaded (re-run "
              "`python -m task2 predict`)")
        return
    if len(loaded) != 1:
        r.add("no-ensemble", key, f"{len(loaded)} checkpoints loaded: averaging predictions of several "
              "models/checkpoints is an ensemble")
    used = pred.get(L.CHECKPOINTS_USED)
    if used is not None and used != len(loaded):
        r.add("no-ensemble", f"{mw}:{L.PREDICTION}.{L.CHECKPOINTS_USED}",
              f"= {used!r}, but {len(loaded)} checkpoints were loaded")
    ck = t2.get(L.CHECKPOINT) if isinstance(t2.get(L.CHECKPOINT), dict) else {}
    for entry in loaded:
        if not isinstance(entry, dict) or not entry.get(L.SHA256):
            r.add("no-ensemble", key, f"entry {entry!r} records no sha256")
            continue
        if entry[L.SHA256] != ck.get(L.SHA256):
            r.add("no-ensemble", key, f"{entry.get(L.PATH)} (sha256 {entry[L.SHA256][:12]}) is not the trained "
                  f"checkpoint of this run (sha256 {str(ck.get(L.SHA256))[:12]})")
            continue
        p = ctx.data_file(str(entry.get(L.PATH) or ""), ctx.run2)
        if not p.is_file() or ctx.sha(p) != entry[L.SHA256]:
            r.add("no-ensemble", key, f"{ctx.rel(p)} on disk is not the checkpoint predict loaded")


def _check_prediction(ctx: _Ctx, t2: dict | None) -> None:
    from .prediction import parse_prediction, test_rows

    r = ctx.report
    path = ctx.run.prediction
    where = ctx.rel(path)
    test_path, n = test_rows(ctx.paths.root)
    scores = None
    if not path.is_file():
        r.add("prediction", where, f"{C.SUBMISSION_FILE} not found (run `python -m task2 predict`)")
    else:
        raw = path.read_bytes()
        try:
            scores = parse_prediction(raw, n, ctx.track, where)
        except KitError as exc:
            r.add("prediction", where, str(exc).replace(where + ": ", ""))
    if t2 is None:
        return
    mw = ctx.rel(ctx.run.task2_manifest)
    pred = t2.get(L.PREDICTION)
    if not isinstance(pred, dict):
        r.add("manifest", f"{mw}:{L.PREDICTION}", "not recorded: run `python -m task2 predict` for this run")
        return
    _check_loaded(ctx, t2, pred, mw)
    if pred.get("track") and get_track(str(pred["track"])).name != ctx.track.name:
        r.add("prediction", f"{mw}:{L.PREDICTION}.track",
              f"task2 predict ran for track {pred['track']} (column {pred.get('column')!r}); "
              f"re-run `python -m task2 predict --track {ctx.track.name}`")
    if pred.get(L.PATH) and _resolve(ctx.data_file(str(pred[L.PATH]), ctx.run2)) != _resolve(path):
        r.add("prediction", f"{mw}:{L.PREDICTION}.{L.PATH}",
              f"= {pred[L.PATH]!r}: the run's prediction is {where}")
    if path.is_file() and pred.get(L.SHA256) != file_sha256(path):
        r.add("provenance", where, "differs from what task2 predict wrote (sha256 differs from the "
              "manifest): predictions may not be edited, blended or averaged by hand")
    if pred.get("test_sha256") and test_path.is_file() and pred["test_sha256"] != ctx.sha(test_path):
        r.add("prediction", f"{mw}:{L.PREDICTION}.test_sha256",
              f"predictions were made for another test set than {ctx.rel(test_path)}")
    if scores is not None:
        _check_rescored(ctx, t2, scores, where)


def _check_rescored(ctx: _Ctx, t2: dict, scores, where: str) -> None:
    """Re-derive: score a deterministic sample of test rows with the checkpoint, compare."""
    import numpy as np

    from .fingerprint import RESCORE_TOL, RESCORE_TOL_AMP, rescore

    state, items, why = _load_run_checkpoint(ctx, t2)
    if state is None:  # an unloadable checkpoint would let any prediction through unverified
        ctx.report.add("provenance", where, f"cannot be re-scored with the run's checkpoint: {why}")
        return
    seed = secrets.randbits(31)
    try:
        idx, probs = rescore(state, items, ctx.paths.table(C.TEST), seed)
    except (KitError, RuntimeError, KeyError, ValueError) as exc:
        ctx.report.add("provenance", where, f"the checkpoint cannot re-score test rows: "
                       f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return
    runtime = t2.get(L.RUNTIME) if isinstance(t2.get(L.RUNTIME), dict) else {}
    amp_cuda = bool(runtime.get("amp", False)) and "cuda" in str(t2.get("device", runtime.get("device", "")))
    tol = RESCORE_TOL_AMP if amp_cuda else RESCORE_TOL
    diff = np.abs(probs - scores[idx])
    ctx.report.rescored = {"rows": int(len(idx)), "seed": seed, "max_abs_diff": float(diff.max(initial=0.0)),
                           "tol": tol}
    if diff.size and diff.max() > tol:
        i = int(idx[int(diff.argmax())])
        ctx.report.add("provenance", where,
                       f"re-scored {len(idx)} test rows with the checkpoint: row {i} is {scores[i]:.6f} in "
                       f"the file, {probs[int(diff.argmax())]:.6f} from the model (max |diff| {diff.max():.2e} > "
                       f"{tol:g}, sample seed {seed}): the prediction is not the checkpoint's")

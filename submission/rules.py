"""`submission check`: the challenge's rules, checked against a run directory.

Evidence comes from three places: the run manifests (what each run read, which weights it
used, its config, the hashes of what it wrote), the files themselves (item_info,
prediction.csv, test.parquet) and the source code (scan.py). Every broken rule becomes a
Violation(rule, where, reason); the report lists them all rather than stopping at the first.
"""
from __future__ import annotations

import math
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmctr import contract as C
from mmctr import manifest as M
from mmctr.errors import KitError
from mmctr.io import file_sha256
from mmctr.paths import DataPaths
from mmctr.tracks import TASK1_TUNABLE, get_track

from . import layout as L
from .scan import iter_sources, scan_file

REPO_ROOT = Path(__file__).resolve().parent.parent
DIN_CONFIG = REPO_ROOT / "task2" / "configs" / "din_baseline.yaml"
TASK2_CODE = REPO_ROOT / "task2"
# Runtime-only keys (speed and budget, not what is learned); task2.config declares its own.
RUNTIME_KEYS = ("device", "amp", "compile", "max_epochs", "eval_batch_size", "num_workers",
                "num_threads", "log_every")
# Config keys that would mean more than one model or averaged predictions.
ENSEMBLE_KEYS = ("ensemble", "n_ensemble", "ensemble_size", "num_models", "n_models", "n_seeds",
                 "snapshot_ensemble", "average_checkpoints", "avg_checkpoints", "bagging", "swa")

RULES = {
    "manifest": "the run manifests exist, parse, and record what the rules need",
    "single-model": "one CTR model: the task2 manifest records n_models == 1",
    "no-ensemble": "no averaging of predictions: prediction.csv comes from one checkpoint",
    "no-trees": "no tree or boosting library in the training/inference code (.py and notebooks)",
    "no-pretrained-ctr": "no pretrained large model in the CTR model (task2 code and manifest)",
    "inputs-in-data": "every input lies in the data dir or the runs dir, or is declared model weights",
    "no-test-in-training": "test rows and test labels are never training inputs",
    "item-info": "the new item_info is 128-D, row i = item i, row 0 zero, items and tags as provided",
    "item-info-used": "task2 trained on the item_info that was checked (Task-1 tracks)",
    "fixed-din": "Task-1 track: the baseline DIN config with only its five tunable hyperparameters changed",
    "provided-embeddings": "Task-2 track: task2 trained on the provided item_info, unchanged",
    "provenance": "files are the ones the recorded runs wrote (sha256 in the manifests)",
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
                "warnings": [asdict(v) for v in self.warnings]}

    def lines(self) -> list:
        out = [f"check track {self.track}: runs {self.runs}, data {self.data_dir}"]
        out += [f"FAIL {v}" for v in self.violations]
        out += [f"warn {w}" for w in self.warnings]
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

def _under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


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
        doc = M.read_manifest(path)
    except KitError as exc:
        report.add("manifest", rel(path), str(exc))
        return None
    if not isinstance(doc, dict) or doc.get(M.KIND) != kind:
        got = doc.get(M.KIND) if isinstance(doc, dict) else type(doc).__name__
        report.add("manifest", rel(path), f"kind is {got!r}, expected {kind!r}")
        return None
    return doc


def _inputs(report: Report, doc: dict, rel, where: str) -> dict:
    inputs = doc.get(M.INPUTS)
    if not isinstance(inputs, dict):
        report.add("manifest", where, f"'{M.INPUTS}' must map each file read to its sha256")
        return {}
    return inputs


def _runtime_keys() -> set:
    keys = set(RUNTIME_KEYS)
    try:
        from task2.config import RUNTIME_KEYS as declared

        keys |= set(declared)
    except Exception:  # task2 not importable here: the list above still applies
        pass
    return keys


def _din_defaults() -> dict | None:
    """The DIN model's own defaults from task2 (keys the fixed YAML leaves implicit)."""
    try:
        from task2.config import TRAIN_DEFAULTS
        from task2.models import model_defaults

        return {**TRAIN_DEFAULTS, **model_defaults("din")}
    except Exception:
        return None


def default_code_dirs() -> list:
    """The repo's own code: every top-level Python package beside submission/."""
    return [p for p in sorted(REPO_ROOT.iterdir())
            if p.is_dir() and (p / "__init__.py").is_file() and p.name != "submission"]


# ---------------------------------------------------------------------------- the check

class _Ctx:
    def __init__(self, track, runs, data_dir):
        self.track = get_track(track)
        self.paths = DataPaths.resolve(data_dir)
        runs_path = Path(runs).expanduser()
        if not runs_path.is_dir():
            raise KitError(f"runs directory not found: {runs_path} (run `make task1 task2` first)")
        self.run = L.RunLayout.of(runs_path)
        self.report = Report(self.track.name, str(runs_path), str(data_dir))
        self._sha: dict = {}

    def rel(self, p) -> str:
        p = Path(p)
        for root, name in ((self.run.runs, "$RUNS"), (self.paths.root, "$DATA")):
            if _under(_resolve(p), root):
                return f"{name}/{_resolve(p).relative_to(root)}"
        return str(p)

    def sha(self, p: Path) -> str:
        p = _resolve(p)
        if p not in self._sha:
            self._sha[p] = file_sha256(p)
        return self._sha[p]


def check(track: str, runs, data_dir, code_dirs=None, task2_code=None,
          din_config=None) -> Report:
    """Check every rule for `track` on the run directory `runs`; return the Report."""
    ctx = _Ctx(track, runs, data_dir)
    r = ctx.report
    r.checked = [k for k in RULES if not (
        (k in ("item-info", "item-info-used", "fixed-din") and not ctx.track.new_embeddings) or
        (k == "fixed-din" and ctx.track.custom_model) or
        (k == "provided-embeddings" and ctx.track.new_embeddings))]

    t2 = _load(r, ctx.run.task2_manifest, "task2", ctx.rel)
    t1 = _load(r, ctx.run.task1_manifest, "task1", ctx.rel) if ctx.track.new_embeddings else None

    _check_code(ctx, code_dirs, task2_code)
    if t2 is not None:
        _check_task2_manifest(ctx, t2)
        _check_inputs(ctx, t1, t2)
    elif t1 is not None:
        _check_inputs(ctx, t1, None)
    if ctx.track.new_embeddings:
        _check_item_info(ctx, t1, t2)
        if not ctx.track.custom_model and t2 is not None:
            _check_fixed_din(ctx, t2, din_config or DIN_CONFIG)
    elif t2 is not None:
        _check_provided_embeddings(ctx, t2)
    _check_prediction(ctx, t2)
    return r


def _check_code(ctx: _Ctx, code_dirs, task2_code) -> None:
    """Tree/boosting libraries anywhere in the code; pretrained models in the CTR code."""
    r = ctx.report
    dirs = [Path(d) for d in (code_dirs if code_dirs else default_code_dirs())]
    t2dirs = [Path(d) for d in (task2_code if task2_code else [TASK2_CODE])]
    for d in dirs + t2dirs:
        if not d.exists():
            r.warn("no-trees", d, "code path does not exist; nothing scanned there")
    files: dict = {}  # resolved path -> scan for pretrained models too
    for d in dirs:
        for p in iter_sources(d):
            files.setdefault(_resolve(p), False)
    for d in t2dirs:
        for p in iter_sources(d):
            files[_resolve(p)] = True
    for p, ctr_code in files.items():
        for h in scan_file(p, pretrained=ctr_code, display=_display(p)):
            if h.kind == "tree":
                r.add("no-trees", h.where, h.detail)
            elif h.kind == "pretrained":
                r.add("no-pretrained-ctr", h.where, h.detail + " in the CTR model's code")
            else:
                r.warn("no-trees", h.where, h.detail)


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
    cfg = t2.get(M.CONFIG)
    if not isinstance(cfg, dict):
        r.add("manifest", f"{where}:{M.CONFIG}", "missing: the full model and training config")
        cfg = {}
    for key in ENSEMBLE_KEYS:
        v = cfg.get(key)
        if v not in (None, False, 0, 1, "", "none", [], {}):
            rule = "single-model" if key in ("num_models", "n_models", "n_seeds", "bagging") else "no-ensemble"
            r.add(rule, f"{where}:{M.CONFIG}.{key}", f"= {v!r}: ensembles and averaged models are not allowed")
    pre = t2.get(L.PRETRAINED)
    if pre is None:
        r.add("manifest", f"{where}:{L.PRETRAINED}", "not recorded; must be [] for the CTR model")
    elif pre:
        names = ", ".join(str(m.get("name", m) if isinstance(m, dict) else m) for m in pre)
        r.add("no-pretrained-ctr", f"{where}:{L.PRETRAINED}",
              f"the CTR model used pretrained weights ({names}); pretrained models may only "
              "extract item features in Task 1")
    if t2.get(M.MODELS):
        r.add("no-pretrained-ctr", f"{where}:{M.MODELS}",
              "the CTR run declares pretrained models; they are allowed in Task 1 only")
    ck = t2.get(L.CHECKPOINT)
    if isinstance(ck, dict) and ck.get(L.PATH):
        p = Path(ck[L.PATH])
        if not p.is_file():
            r.warn("provenance", f"{where}:{L.CHECKPOINT}", f"checkpoint {p} is missing; cannot verify it")
        elif ck.get(L.SHA256) and ctx.sha(p) != ck[L.SHA256]:
            r.add("provenance", ctx.rel(p), "checkpoint changed after training (sha256 differs from the manifest)")
    else:
        r.add("manifest", f"{where}:{L.CHECKPOINT}", "not recorded: task2 train did not finish")


def _check_inputs(ctx: _Ctx, t1: dict | None, t2: dict | None) -> None:
    r = ctx.report
    roots = (ctx.paths.root, ctx.run.runs)
    test_path = _resolve(ctx.paths.table(C.TEST))
    test_sha = ctx.sha(test_path) if test_path.is_file() else None
    truth = ctx.paths.root / L.SAMPLE_TRUTH_DIR
    truth_shas = {ctx.sha(p) for p in truth.glob("*.parquet")} if truth.is_dir() else set()
    declared_sha, declared_src = set(), []
    if t1 is not None:
        models = t1.get(M.MODELS)
        if not isinstance(models, list):
            r.add("manifest", f"{ctx.rel(ctx.run.task1_manifest)}:{M.MODELS}",
                  "must list the pretrained weights used ([] if none)")
            models = []
        for m in models:
            if isinstance(m, dict):
                if m.get(L.SHA256):
                    declared_sha.add(m[L.SHA256])
                for key in ("path", "source"):  # where the weights live ("source" may be "package:...")
                    if isinstance(m.get(key), str) and Path(m[key]).expanduser().is_absolute():
                        declared_src.append(_resolve(m[key]))
    for doc, mpath, may_use_weights in ((t1, ctx.run.task1_manifest, True),
                                        (t2, ctx.run.task2_manifest, False)):
        if doc is None:
            continue
        where = ctx.rel(mpath)
        entries = dict(_inputs(r, doc, ctx.rel, f"{where}:{M.INPUTS}"))
        if doc is t2 and isinstance(doc.get(L.ITEM_INFO), dict) and doc[L.ITEM_INFO].get(L.PATH):
            entries.setdefault(doc[L.ITEM_INFO][L.PATH], doc[L.ITEM_INFO].get(L.SHA256))
        for raw, sha in entries.items():
            p = _resolve(raw)
            shown = f"{where}:{M.INPUTS}[{raw}]"
            if p == test_path or (sha and sha == test_sha):
                r.add("no-test-in-training", shown,
                      "reads test.parquet; test rows must not be used in training")
            elif _under(p, truth) or (sha and sha in truth_shas):
                r.add("no-test-in-training", shown,
                      "reads the sample's true labels/click probabilities (test labels)")
            if any(_under(p, root) for root in roots):
                continue
            if may_use_weights and ((sha and sha in declared_sha) or
                                    any(p == s or _under(p, s) for s in declared_src)):
                continue
            why = ("outside the data dir and the runs dir, and not declared model weights"
                   if may_use_weights else
                   "outside the data dir and the runs dir (the CTR run may read nothing else)")
            r.add("inputs-in-data", shown, f"{p} is {why}")


def _item_info_violations(path: Path) -> tuple:
    """Contract violations of one item_info file, using mmctr.validate's own checks."""
    from mmctr.validate import _check_item_info, _Checker, check_table

    shim = types.SimpleNamespace(table=lambda table: path)
    violations, data = check_table(shim, C.ITEM_INFO, None)
    if data is not None:
        chk = _Checker(C.ITEM_INFO.relpath)
        _check_item_info(data, chk)
        violations = violations + chk.out
    return violations, data


def _check_item_info(ctx: _Ctx, t1: dict | None, t2: dict | None) -> None:
    r = ctx.report
    path = ctx.run.item_info
    where = ctx.rel(path)
    if not path.is_file():
        r.add("item-info", where, "missing: task1 must write the new item_info (run `make task1`)")
        return
    violations, data = _item_info_violations(path)
    for v in violations:
        r.add("item-info", where, str(v).split(": ", 1)[-1] if str(v).startswith(C.ITEM_INFO.relpath)
              else str(v))
    official = ctx.paths.table(C.ITEM_INFO)
    if data is not None and official.is_file():
        import pyarrow.parquet as pq

        n_off = pq.read_metadata(official).num_rows
        if data.num_rows != n_off:
            r.add("item-info", where, f"{data.num_rows} rows, the provided item_info has {n_off}: "
                  "row i must hold item i for every provided item (misaligned)")
        elif not violations:
            from mmctr.item_info import read_item_info

            tags, _ = read_item_info(path)
            tags_off, _ = read_item_info(official)
            import numpy as np

            bad = np.flatnonzero((tags != tags_off).any(axis=1))
            if bad.size:
                r.add("item-info", f"{where}:{C.ITEM_TAGS}",
                      f"row {bad[0]} differs from the provided item_tags ({bad.size} rows): only "
                      f"{C.ITEM_EMB} may change, rows must stay aligned with the provided items")
    sha = ctx.sha(path)
    if t1 is not None:
        outs = t1.get(M.OUTPUTS) or {}
        recorded = next((v for k, v in outs.items() if _resolve(k) == path), None)
        if recorded is None:
            r.warn("provenance", f"{ctx.rel(ctx.run.task1_manifest)}:{M.OUTPUTS}",
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


def _check_fixed_din(ctx: _Ctx, t2: dict, din_config) -> None:
    import yaml

    r, where = ctx.report, ctx.rel(ctx.run.task2_manifest)
    din_config = Path(din_config)
    if not din_config.is_file():
        raise KitError(f"fixed DIN config not found: {din_config}")
    base = yaml.safe_load(din_config.read_text()) or {}
    cfg = t2.get(M.CONFIG) if isinstance(t2.get(M.CONFIG), dict) else {}
    ignore = set(TASK1_TUNABLE) | _runtime_keys() | {L.CONFIG_SOURCE}
    tunable = ", ".join(TASK1_TUNABLE)
    for key, fixed in base.items():
        if key in ignore:
            continue
        if key not in cfg:
            r.add("fixed-din", f"{where}:{M.CONFIG}.{key}",
                  f"missing; the fixed DIN has {key} = {fixed!r}")
        elif not _same(cfg[key], fixed):
            r.add("fixed-din", f"{where}:{M.CONFIG}.{key}",
                  f"= {cfg[key]!r}, the fixed DIN has {fixed!r}; the Task-1 track may change only {tunable}")
    defaults = _din_defaults()
    for key in sorted(set(cfg) - set(base) - ignore):
        if defaults is None:
            r.warn("fixed-din", f"{where}:{M.CONFIG}.{key}",
                   "not in the fixed DIN config and task2's DIN defaults are not importable")
        elif key not in defaults:
            r.add("fixed-din", f"{where}:{M.CONFIG}.{key}",
                  "is not a hyperparameter of the fixed DIN; the Task-1 track may change only " + tunable)
        elif not _same(cfg[key], defaults[key]):
            r.add("fixed-din", f"{where}:{M.CONFIG}.{key}",
                  f"= {cfg[key]!r}, the fixed DIN's default is {defaults[key]!r}; "
                  f"the Task-1 track may change only {tunable}")


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


def _check_prediction(ctx: _Ctx, t2: dict | None) -> None:
    from .prediction import test_rows, validate_prediction

    r = ctx.report
    path = ctx.run.prediction
    where = ctx.rel(path)
    test_path, n = test_rows(ctx.paths.root)
    try:
        validate_prediction(path, n, ctx.track.name)
    except KitError as exc:
        r.add("prediction", where, str(exc).replace(str(path) + ": ", ""))
    if t2 is None:
        return
    mw = ctx.rel(ctx.run.task2_manifest)
    pred = t2.get(L.PREDICTION)
    if not isinstance(pred, dict):
        r.add("manifest", f"{mw}:{L.PREDICTION}", "not recorded: run `python -m task2 predict` for this run")
        return
    used = pred.get(L.CHECKPOINTS_USED)
    if used is None:
        r.add("no-ensemble", f"{mw}:{L.PREDICTION}.{L.CHECKPOINTS_USED}",
              "not recorded; predictions must come from exactly one checkpoint")
    elif used != 1:
        r.add("no-ensemble", f"{mw}:{L.PREDICTION}.{L.CHECKPOINTS_USED}",
              f"{used} checkpoints: averaging predictions of several models/checkpoints is an ensemble")
    if pred.get("track") and get_track(str(pred["track"])).name != ctx.track.name:
        r.add("prediction", f"{mw}:{L.PREDICTION}.track",
              f"task2 predict ran for track {pred['track']} (column {pred.get('column')!r}); "
              f"re-run `python -m task2 predict --track {ctx.track.name}`")
    if path.is_file():
        if pred.get(L.SHA256) != ctx.sha(path):
            r.add("provenance", where, "differs from what task2 predict wrote (sha256 differs from the "
                  "manifest): predictions may not be edited, blended or averaged by hand")
    if pred.get("test_sha256") and test_path.is_file() and pred["test_sha256"] != ctx.sha(test_path):
        r.add("prediction", f"{mw}:{L.PREDICTION}.test_sha256",
              f"predictions were made for another test set than {ctx.rel(test_path)}")

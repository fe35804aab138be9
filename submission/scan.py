"""Source scanning: tree/boosting libraries anywhere, pretrained large models in CTR code.

Python files are parsed with `ast` and notebooks with nbformat (code cells only), so a
library named in a comment, a string or a rule table (like the ones below) is not a hit:
only real imports and calls are. IPython magics (`%...`, `!...`) are dropped before
parsing; a `!pip install <banned>` line is reported, since it is how a notebook pulls
a library in.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

# Module prefixes (dotted). "sklearn.tree" matches sklearn.tree and sklearn.tree._classes.
TREE_MODULES = (
    "xgboost", "lightgbm", "catboost", "sklearn.ensemble", "sklearn.tree",
    "sklearn.experimental.enable_hist_gradient_boosting", "thundergbm", "ngboost",
    "interpret.glassbox", "pygbm", "h2o", "treelite", "tensorflow_decision_forests",
    "ydf", "hummingbird", "dtreeviz", "imodels", "sklearn_gbmi", "cuml.ensemble",
)
# Pip distribution names of the above (for `!pip install ...` lines in notebooks).
TREE_PACKAGES = ("xgboost", "lightgbm", "catboost", "thundergbm", "ngboost", "h2o",
                 "treelite", "tensorflow-decision-forests", "ydf", "hummingbird-ml")
# Libraries whose purpose is loading pretrained large models: banned in the CTR model code.
PRETRAINED_MODULES = (
    "transformers", "sentence_transformers", "open_clip", "clip", "huggingface_hub",
    "peft", "torch.hub", "timm.models.hub", "diffusers", "fairseq", "vllm", "openai",
)
PRETRAINED_PACKAGES = ("transformers", "sentence-transformers", "open-clip-torch",
                       "open_clip_torch", "huggingface-hub", "peft", "diffusers")
# Calls that fetch weights whatever the import: x.from_pretrained(...), torch.hub.load(...),
# load_state_dict_from_url(...), anything(..., pretrained=True) or (..., weights="..."/X_Weights.Y).
# (pretrained=<a variable> is not a hit: a manifest field named `pretrained` is legitimate.)
PRETRAINED_CALLS = ("from_pretrained", "load_state_dict_from_url", "hf_hub_download",
                    "snapshot_download")
SCAN_SUFFIXES = (".py", ".ipynb")
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".ipynb_checkpoints", "node_modules",
             "build", "dist", ".pytest_cache", ".mypy_cache"}


@dataclass(frozen=True)
class Hit:
    kind: str  # "tree" | "pretrained" | "unparsable"
    file: str
    line: int
    detail: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


def _matches(module: str, prefixes) -> str | None:
    for p in prefixes:
        if module == p or module.startswith(p + "."):
            return p
    return None


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _const_str(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class _Visitor(ast.NodeVisitor):
    def __init__(self, file: str, line_offset: int, pretrained: bool):
        self.file, self.off, self.pretrained = file, line_offset, pretrained
        self.hits: list = []
        self.aliases: dict = {}  # local name -> module it stands for

    def _module(self, module: str, node, how: str) -> None:
        if (p := _matches(module, TREE_MODULES)):
            self.hits.append(Hit("tree", self.file, node.lineno + self.off,
                                 f"{how} {module} (tree/boosting library '{p}')"))
        if self.pretrained and (p := _matches(module, PRETRAINED_MODULES)):
            self.hits.append(Hit("pretrained", self.file, node.lineno + self.off,
                                 f"{how} {module} (pretrained-model library '{p}')"))

    def visit_Import(self, node):
        for a in node.names:
            self._module(a.name, node, "imports")
            if a.asname:
                self.aliases[a.asname] = a.name
            else:
                top = a.name.split(".")[0]
                self.aliases[top] = top
        self.generic_visit(node)

    def visit_ImportFrom(self, node):
        if node.level == 0 and node.module:
            self._module(node.module, node, "imports")
            for a in node.names:  # from sklearn import ensemble -> sklearn.ensemble
                full = f"{node.module}.{a.name}"
                self.aliases[a.asname or a.name] = full
                if _matches(full, TREE_MODULES) and not _matches(node.module, TREE_MODULES):
                    self._module(full, node, "imports")
                elif self.pretrained and _matches(full, PRETRAINED_MODULES) \
                        and not _matches(node.module, PRETRAINED_MODULES):
                    self._module(full, node, "imports")
        self.generic_visit(node)

    def visit_Call(self, node):
        name = _dotted(node.func) or ""
        last = name.rsplit(".", 1)[-1] if name else getattr(node.func, "attr", "")
        # __import__("xgboost"), importlib.import_module("xgboost")
        if last in ("__import__", "import_module") and node.args and (mod := _const_str(node.args[0])):
            self._module(mod, node, "dynamically imports")
        if self.pretrained:
            head = name.split(".")[0] if name else ""
            full = name.replace(head, self.aliases.get(head, head), 1) if head else name
            if _matches(full, ("torch.hub",)):
                self.hits.append(Hit("pretrained", self.file, node.lineno + self.off,
                                     f"calls {full}() (downloads pretrained weights)"))
            elif last in PRETRAINED_CALLS:
                self.hits.append(Hit("pretrained", self.file, node.lineno + self.off,
                                     f"calls {last}() (loads pretrained weights)"))
            for kw in node.keywords:
                v = kw.value
                if kw.arg == "pretrained" and isinstance(v, ast.Constant) and v.value \
                        and isinstance(v.value, (bool, int, str)):  # pretrained=True / "imagenet"
                    self.hits.append(Hit("pretrained", self.file, node.lineno + self.off,
                                         f"calls {name or last}(pretrained=...) (pretrained weights)"))
                elif kw.arg == "weights" and (_const_str(v) or "Weights" in (_dotted(v) or "")):
                    shown = _const_str(v) or _dotted(v)
                    self.hits.append(Hit("pretrained", self.file, node.lineno + self.off,
                                         f"calls {name or last}(weights={shown}) (pretrained weights)"))
        self.generic_visit(node)


_PIP_LINE = re.compile(r"^\s*[!%]+\s*(?:python\s+-m\s+)?pip3?\s+install\b(.*)$")


def _scan_source(text: str, file: str, line_offset: int, pretrained: bool) -> list:
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        return [Hit("unparsable", file, (exc.lineno or 0) + line_offset,
                    f"cannot be parsed ({exc.msg}); its imports were not checked")]
    v = _Visitor(file, line_offset, pretrained)
    v.visit(tree)
    return v.hits


def _pip_hits(line: str, file: str, lineno: int, pretrained: bool) -> list:
    m = _PIP_LINE.match(line)
    if not m:
        return []
    out = []
    for tok in m.group(1).split():
        name = re.split(r"[<>=!~\[;@ ]", tok, maxsplit=1)[0].lower()
        if name in TREE_PACKAGES:
            out.append(Hit("tree", file, lineno, f"installs {name} (tree/boosting library)"))
        elif pretrained and name in PRETRAINED_PACKAGES:
            out.append(Hit("pretrained", file, lineno, f"installs {name} (pretrained-model library)"))
    return out


def scan_file(path, pretrained: bool, display: str | None = None) -> list:
    """Hits in one .py or .ipynb file. `pretrained`: also look for pretrained-model use."""
    path = Path(path)
    file = display or str(path)
    if path.suffix == ".ipynb":
        import nbformat

        try:
            nb = nbformat.read(str(path), as_version=4)
        except Exception as exc:  # not JSON, not a notebook
            return [Hit("unparsable", file, 0, f"cannot be read as a notebook ({type(exc).__name__})")]
        hits = []
        for i, cell in enumerate(nb.cells):
            if cell.get("cell_type") != "code":
                continue
            lines = cell.get("source", "").splitlines()
            kept = []
            for j, line in enumerate(lines):
                if line.lstrip().startswith(("%", "!")):
                    hits += _pip_hits(line, f"{file}[cell {i}]", j + 1, pretrained)
                    kept.append("")  # keep line numbers
                else:
                    kept.append(line)
            hits += _scan_source("\n".join(kept), f"{file}[cell {i}]", 0, pretrained)
        return hits
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        return [Hit("unparsable", file, 0, f"cannot be read ({type(exc).__name__})")]
    return _scan_source(text, file, 0, pretrained)


def iter_sources(root):
    root = Path(root)
    if root.is_file():
        if root.suffix in SCAN_SUFFIXES:
            yield root
        return
    for p in sorted(root.rglob("*")):
        if p.suffix in SCAN_SUFFIXES and p.is_file() and \
                not any(part in SKIP_DIRS for part in p.relative_to(root).parts[:-1]):
            yield p


def scan_tree(root, pretrained: bool, base=None) -> list:
    """Scan every .py/.ipynb under `root` (skipping venvs, caches, checkpoints)."""
    hits = []
    for p in iter_sources(root):
        shown = p
        if base is not None:
            try:
                shown = p.resolve().relative_to(Path(base).resolve())
            except ValueError:
                pass
        hits += scan_file(p, pretrained, display=str(shown))
    return hits

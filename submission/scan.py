"""Source scanning: tree/boosting libraries anywhere, pretrained large models in CTR code.

Python files are parsed with `ast` and notebooks with nbformat (code cells only), so a
library named in a comment, a string or a rule table (like the ones below) is not a hit:
only real imports and calls are. IPython magics (`%...`, `!...`) are dropped before
parsing; a `!pip install <banned>` / `%pip install` line is reported, since it is how a
notebook pulls a library in.

Dynamic imports (`importlib.import_module(x)`, `__import__(x)`) and `exec`/`eval`/`compile`
of a string are followed: string constants, concatenations and f-strings of constants are
folded, and a name is resolved to every value the file gives it (assignments, loops over
literal tuples, look-ups in literal dicts). Executed strings are scanned as code. What cannot
be resolved is a hit: the check cannot tell which library it loads.
"""
from __future__ import annotations

import ast
import functools
import re
import subprocess
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


def _fold(node) -> str | None:
    """A string built from constants only ('light' + 'gbm', f'{"xg"}boost'), else None."""
    if (c := _const_str(node)) is not None:
        return c
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        a, b = _fold(node.left), _fold(node.right)
        return a + b if a is not None and b is not None else None
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.FormattedValue):
                if v.format_spec is not None or (inner := _fold(v.value)) is None:
                    return None
                parts.append(inner)
            elif (c := _const_str(v)) is not None:
                parts.append(c)
            else:
                return None
        return "".join(parts)
    return None


def _literal_strings(node) -> list | None:
    """Every string a literal tuple/list/set holds, or the values of a literal dict."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [_fold(e) for e in node.elts]
    elif isinstance(node, ast.Dict):
        items = [_fold(v) for v in node.values]
    else:
        return None
    return None if any(i is None for i in items) else items


class _Names:
    """Every value each name is given in one file (scope-blind, so a superset)."""

    def __init__(self, tree):
        self.bound: dict = {}  # name -> list of value nodes / ("iter", node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        self.bound.setdefault(t.id, []).append(node.value)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and \
                    isinstance(node.target, ast.Name):
                self.bound.setdefault(node.target.id, []).append(
                    None if isinstance(node, ast.AugAssign) else node.value)
            elif isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.target, ast.Name):
                self.bound.setdefault(node.target.id, []).append(("iter", node.iter))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                    self.bound.setdefault(a.arg, []).append(None)  # a parameter: any value

    def values(self, node, depth: int = 0) -> list | None:
        """The strings `node` may evaluate to, or None when some cannot be known."""
        if depth > 8:
            return None
        if (c := _fold(node)) is not None:
            return [c]
        if isinstance(node, ast.Name):
            sources = self.bound.get(node.id)
            if not sources:
                return None
            out = []
            for src in sources:
                if src is None:
                    return None
                if isinstance(src, tuple):  # for name in <iterable>
                    got = _literal_strings(src[1])
                    if got is None and isinstance(src[1], ast.Name):
                        got = self._container(src[1].id)
                else:
                    got = self.values(src, depth + 1)
                if got is None:
                    return None
                out += got
            return out
        # D.get(k) / D[k] on a literal dict (or tuple/list) bound to a name
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and isinstance(node.func.value, ast.Name):
            got = self._container(node.func.value.id)
            if got is not None and len(node.args) > 1:
                more = self.values(node.args[1], depth + 1)
                return None if more is None else got + more
            return got
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            return self._container(node.value.id)
        return None

    def _container(self, name: str) -> list | None:
        sources = self.bound.get(name) or [None]
        out = []
        for src in sources:
            got = _literal_strings(src) if src is not None and not isinstance(src, tuple) else None
            if got is None:
                return None
            out += got
        return out


class _Visitor(ast.NodeVisitor):
    def __init__(self, file: str, line_offset: int, pretrained: bool, names: _Names):
        self.file, self.off, self.pretrained = file, line_offset, pretrained
        self.hits: list = []
        self.aliases: dict = {}  # local name -> module it stands for
        self.names = names

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
        # getattr(importlib, "import_module")(...), getattr(builtins, "exec")(...)
        if isinstance(node.func, ast.Call) and _dotted(node.func.func) == "getattr" and len(node.func.args) >= 2:
            got = self.names.values(node.func.args[1])
            if got is None or set(got) & {"__import__", "import_module", "run_module", "exec", "eval"}:
                if node.args:
                    self._dynamic(node, node.args[0], "getattr()-calls",
                                  as_code=bool(got and set(got) & {"exec", "eval"}))
                else:
                    self.hits.append(Hit("tree", self.file, node.lineno + self.off,
                                         "calls a function fetched by getattr() that the check cannot resolve"))
        if name.split(".")[0] in ("subprocess", "os") and last in _SHELL_CALLS:
            self._shell(node)
        if name in ("builtins.exec", "builtins.eval", "__builtins__.exec", "__builtins__.eval") and node.args:
            self._dynamic(node, node.args[0], f"{last}()s", as_code=True)
        # __import__("xgboost"), importlib.import_module("light" + "gbm"), __import__(name)
        if last in ("__import__", "import_module", "run_module") and node.args:
            self._dynamic(node, node.args[0], "dynamically imports", as_code=False)
        # exec("import xgboost"), eval("__import__('catboost')"), compile(src, ...)
        elif isinstance(node.func, ast.Name) and node.func.id in ("exec", "eval", "compile") and node.args:
            self._dynamic(node, node.args[0], f"{node.func.id}()s", as_code=True)
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

    def _shell(self, node) -> None:
        """subprocess.run([..., "-c", "import xgboost"]), os.system("pip install lightgbm")."""
        texts = []
        for a in list(node.args) + [k.value for k in node.keywords]:
            elts = a.elts if isinstance(a, (ast.List, ast.Tuple)) else [a]
            texts += [v for e in elts for v in (self.names.values(e) or [])]
        for text in texts:
            words = set(re.findall(r"[A-Za-z0-9_.-]+", text.lower()))
            banned = sorted({m for m in TREE_MODULES + TREE_PACKAGES if m.split(".")[0] in words and "." not in m}
                            | {m for m in TREE_MODULES if m in words})
            if banned:
                self.hits.append(Hit("tree", self.file, node.lineno + self.off,
                                     f"runs a command naming {banned[0]} (tree/boosting library)"))
                return

    def _dynamic(self, node, arg, how: str, as_code: bool) -> None:
        values = self.names.values(arg)
        line = node.lineno + self.off
        if values is None:
            if as_code and node.func.id == "compile":
                return  # compiling alone runs nothing; the exec/eval of the result is what is checked
            self.hits.append(Hit("tree", self.file, line,
                                 f"{how} a string computed at run time ({ast.unparse(arg)[:60]}): the check "
                                 "cannot tell which library it loads; import libraries by name"))
            return
        for v in values:
            if as_code:
                for h in _scan_source(v, self.file, line - 1, self.pretrained):
                    self.hits.append(Hit(h.kind, h.file, line, f"{how} code that " + h.detail))
            else:
                self._module(v, node, how)


_SHELL_CALLS = ("run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput",
                "system", "popen", "execv", "execvp", "execl", "execlp", "spawnv", "spawnl")
_PIP_LINE = re.compile(r"^\s*[!%]+\s*(?:python\s+-m\s+)?pip3?\s+install\b(.*)$")


def _scan_source(text: str, file: str, line_offset: int, pretrained: bool) -> list:
    return list(_scan_text(text, file, line_offset, pretrained))


@functools.lru_cache(maxsize=4096)
def _scan_text(text: str, file: str, line_offset: int, pretrained: bool) -> tuple:
    """The hits of one source text: a function of its arguments alone, so a process that checks
    several runs (pack, reproduce, the tests) parses each unchanged file once."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        return (Hit("unparsable", file, (exc.lineno or 0) + line_offset,
                    f"cannot be parsed ({exc.msg}); its imports were not checked"),)
    v = _Visitor(file, line_offset, pretrained, _Names(tree))
    v.visit(tree)
    return tuple(v.hits)


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


def local_imports(path, repo) -> list:
    """Files under `repo` that `path`'s static imports resolve to (a.b -> a/b.py or a/b/__init__.py;
    relative imports from the file's own folder). Lets the scan follow tracked code into modules
    that git does not track or ignores."""
    path, repo = Path(path), Path(repo).resolve()
    if path.suffix != ".py":
        return []
    try:
        imports = _static_imports(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
        return []
    targets = []
    for level, dotted in imports:
        base = repo
        if level:
            base = path.resolve().parent
            for _ in range(level - 1):
                base = base.parent
        targets.append((base, dotted))
    found = []
    for base, dotted in targets:
        stem = base.joinpath(*dotted.split("."))
        for cand in (stem.with_suffix(".py"), stem / "__init__.py"):
            if not cand.is_file() or cand.is_symlink():
                continue  # most imports name no file of the repo: no path to resolve
            try:
                resolved = cand.resolve()
                resolved.relative_to(repo)
            except (ValueError, OSError):
                continue
            found.append(resolved)
    return found


@functools.lru_cache(maxsize=4096)
def _static_imports(text: str) -> tuple:
    """((level, dotted name)) of every import statement in a source text (level 0: absolute)."""
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out += [(0, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            out += [(node.level, f"{mod}.{a.name}" if mod else a.name) for a in node.names]
            if mod:
                out.append((node.level, mod))
    return tuple(out)


def tracked_sources(repo) -> tuple:
    """(git-tracked and untracked-not-ignored .py/.ipynb paths relative to `repo`, the symlinks
    among them, not followed).

    Outside a git checkout (a copied kit, the Docker image) every such file under `repo` is
    taken, venvs and caches aside.
    """
    repo = Path(repo)
    try:  # untracked files that git does not ignore are scanned too (a scan never hurts)
        res = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                             capture_output=True, timeout=60)
        names = [n for n in res.stdout.decode("utf-8", "replace").split("\0") if n] if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        names = None
    if names is None:
        names = [str(p.relative_to(repo)) for p in iter_sources(repo)]
    names = sorted(set(n for n in names if n.endswith(SCAN_SUFFIXES)))
    links = [n for n in names if (repo / n).is_symlink()]
    return [n for n in names if n not in links and (repo / n).is_file()], links


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

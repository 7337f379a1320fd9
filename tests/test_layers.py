"""The package's layers, read from the source with ``ast`` (nothing is imported).

DESIGN.md, "Layout": layering is one way, kernels < estimators < library < apps
< cli (with the shared, dependency-free ``_io`` and ``_progress`` below the
estimators), and no module imports another module's private name. Checked over every
module of ``jaxtransfer/`` and ``kernels/jaxtransfer_kernels/``:

(a) ``jaxtransfer_kernels`` imports only jax, numpy, the standard library and itself;
(b) no module imports a module of a higher layer (``LAYERS``); ``jaxtransfer/__init__.py``
    and the alias modules ``sources``, ``sprites``, ``zoo`` are the top-level API, which
    may import every layer below the CLI (``__init__`` loads ``apps`` lazily, through
    ``importlib``: those imports are read from its ``_SUBMODULES`` and its
    ``import_module`` calls);
(c) the modules' imports have no cycle;
(d) no module takes a private name (a leading underscore: a private module, or a
    private name in a module) from another package directory, except from the
    shared private modules ``_io``, ``_progress``, ``_nnx`` and ``_hosts``; attribute access
    (``estimators._checks.as_mask``) counts as taking it;
(e) apps and the CLI import jaxtransfer modules at the top of the module, not
    inside functions.

Every import of a jaxtransfer module must name a module that exists. The rules
are functions of the collected imports, so ``test_each_rule_catches_a_violation``
feeds each one a made-up offending import.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "jaxtransfer": ROOT / "jaxtransfer",
    "jaxtransfer_kernels": ROOT / "kernels" / "jaxtransfer_kernels",
}

LAYERS = ("kernels", "shared", "estimators", "library", "apps", "api", "cli")  # lowest first
# the dependency-free shared private modules (stdlib and NumPy only) sit below the estimators, which
# read files and report progress with them (score_matrix over a folder of sources)
SHARED = {"_io", "_progress"}
LIBRARY = {
    "models",
    "datasets",
    "features",
    "transfer",
    "evaluation",
    "metrics",
    "_streamed",
    "_nnx",
    "_hosts",
}
ALIASES = {"sources", "sprites", "streaming", "zoo"}  # documented names that re-export library objects
SHARED_PRIVATE = {"jaxtransfer._io", "jaxtransfer._progress", "jaxtransfer._nnx", "jaxtransfer._hosts"}
KERNEL_DEPENDENCIES = {"jax", "numpy", "jaxtransfer_kernels", "__future__"}

# (d) found when this test was written and reported, not yet resolved: the sub-package
# ``apps.reproduce`` takes helpers from its parent's private modules. They need a public home
# (or the rule a parent-package exception). An entry here that no longer occurs fails the test,
# so the list only shrinks.
KNOWN_PRIVATE_IMPORTS = {
    ("jaxtransfer.apps.reproduce._attributes", "jaxtransfer.apps._rank"),
    ("jaxtransfer.apps.reproduce._attributes", "jaxtransfer.apps._report"),
    ("jaxtransfer.apps.reproduce._common", "jaxtransfer.apps._report"),
    ("jaxtransfer.apps.reproduce._keypoints", "jaxtransfer.apps._report"),
}


@dataclass(frozen=True)
class Module:
    name: str  # dotted: jaxtransfer.estimators._base
    path: Path
    is_package: bool

    @property
    def package(self) -> str:
        """The package whose directory holds the file."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Import:
    importer: str
    line: int
    target: str  # the module imported, resolved (relative imports made absolute)
    names: tuple[str, ...] = ()  # the names taken from ``target`` that are not modules themselves
    local: bool = False  # inside a function
    how: str = "import"  # "import", "attribute" (``module._name``) or "dynamic" (importlib)

    def where(self, modules) -> str:
        path = modules[self.importer].path.relative_to(ROOT) if self.importer in modules else self.importer
        return f"{path}:{self.line}"


def find_modules() -> dict[str, Module]:
    modules = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            modules[name] = Module(name, path, is_package)
    return modules


MODULES = find_modules()


def ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _enclosing(tree):
    """Each node's nearest enclosing function (None at module level) and whether it sits under
    ``if TYPE_CHECKING:``."""
    out = {}

    def visit(node, function, typing_only):
        for child in ast.iter_child_nodes(node):
            f = child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else function
            t = typing_only or (
                isinstance(node, ast.If) and child in node.body and "TYPE_CHECKING" in ast.unparse(node.test)
            )
            out[child] = (f, t)
            visit(child, f, t)

    visit(tree, None, False)
    return out


def collect(module: Module, modules: dict[str, Module] = MODULES) -> list[Import]:
    """Every import of ``module``, resolved; attribute access to a private name of an imported
    jaxtransfer module; and, for ``jaxtransfer/__init__.py``, its lazy ``importlib`` imports."""
    tree = ast.parse(module.path.read_text(), filename=str(module.path))
    enclosing = _enclosing(tree)
    out, aliases = [], {}  # aliases: local name -> the jaxtransfer module it is bound to
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        function, typing_only = enclosing[node]
        if typing_only:
            continue
        local = function is not None
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append(Import(module.name, node.lineno, alias.name, local=local))
                if ours(alias.name):
                    bound = alias.name if alias.asname else alias.name.split(".")[0]
                    aliases[alias.asname or bound] = bound
            continue
        if node.level:
            base = module.package.split(".")[: len(module.package.split(".")) - node.level + 1]
            source = ".".join([*base, node.module] if node.module else base)
        else:
            source = node.module
        names = []
        for alias in node.names:
            if f"{source}.{alias.name}" in modules:  # ``from package import submodule``
                out.append(Import(module.name, node.lineno, f"{source}.{alias.name}", local=local))
                aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
            else:
                names.append(alias.name)
        if names or not node.names:
            out.append(Import(module.name, node.lineno, source, tuple(names), local=local))
    out += _attribute_access(tree, aliases, module.name, modules)
    if module.name == "jaxtransfer":
        out += _lazy_imports(tree, modules)
    return out


def _attribute_access(tree, aliases, importer, modules):
    """``alias.sub._name`` on a bound jaxtransfer module: the deepest module reached and the
    first attribute that is not a module, when a private module or name is involved."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, value = [], node
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if not isinstance(value, ast.Name) or value.id not in aliases:
            continue
        target, rest = aliases[value.id], chain[::-1]
        while rest and f"{target}.{rest[0]}" in modules:
            target, rest = f"{target}.{rest[0]}", rest[1:]
        if any(map(is_private, target.split("."))) or (rest and is_private(rest[0])):
            out.append(Import(importer, node.lineno, target, tuple(rest[:1]), how="attribute"))
    return out


def _lazy_imports(tree, modules):
    """``jaxtransfer/__init__.py`` loads submodules on first use: the names in ``_SUBMODULES``
    and the constant part of every ``importlib.import_module(f"{__name__}.name")``."""
    out = []
    for node in ast.walk(tree):
        strings = []
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "_SUBMODULES" for t in node.targets
        ):
            strings = [e.value for e in node.value.elts]
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module"):
            strings = [v.value.lstrip(".") for v in ast.walk(node.args[0]) if isinstance(v, ast.Constant)]
        for s in filter(None, strings):  # f"{__name__}.{name}": the names are in _SUBMODULES
            out.append(Import("jaxtransfer", node.lineno, f"jaxtransfer.{s}", local=True, how="dynamic"))
    return out


IMPORTS = [imp for module in MODULES.values() for imp in collect(module)]


def layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "jaxtransfer_kernels":
        return "kernels"
    if len(parts) == 1:
        return "api"  # jaxtransfer/__init__.py
    top = parts[1]
    if top == "estimators":
        return "estimators"
    if top in SHARED:
        return "shared"
    if top in LIBRARY:
        return "library"
    if top == "apps":
        return "apps"
    if top in ALIASES:
        return "api"
    if top in ("cli", "__main__"):
        return "cli"
    return None


# ----------------------------------------------------------------------------- the rules
def kernel_violations(imports):
    return [
        imp
        for imp in imports
        if layer(imp.importer) == "kernels"
        and imp.target.split(".")[0] not in KERNEL_DEPENDENCIES | set(sys.stdlib_module_names)
    ]


def upward_imports(imports):
    return [
        imp
        for imp in imports
        if ours(imp.target) and LAYERS.index(layer(imp.target)) > LAYERS.index(layer(imp.importer))
    ]


def cycles(imports):
    """The strongly connected components of more than one module (or a module importing itself)."""
    graph = {}
    for imp in imports:
        if ours(imp.target):
            graph.setdefault(imp.importer, set()).add(imp.target)
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def private_imports(imports, modules=MODULES):
    """(importer, private module or module holding the private name) pairs across package directories."""
    out = set()
    for imp in imports:
        if not ours(imp.target):
            continue
        parts = imp.target.split(".")
        first = next((i for i, p in enumerate(parts) if is_private(p)), None)
        if first is not None:
            private, home = ".".join(parts[: first + 1]), ".".join(parts[:first])
        elif any(map(is_private, imp.names)):
            target = modules.get(imp.target)
            private, home = imp.target, target.package if target else imp.target
        else:
            continue
        importer = modules.get(imp.importer)
        package = importer.package if importer else imp.importer.rpartition(".")[0]  # a made-up module
        if private in SHARED_PRIVATE or home == package:
            continue
        out.add((imp.importer, private))
    return out


def local_imports_in_apps_and_cli(imports):
    return [
        imp
        for imp in imports
        if imp.local
        and ours(imp.target)
        and layer(imp.importer) in ("apps", "cli")
        and imp.how != "attribute"
    ]


def show(imports):
    return "\n".join(
        f"  {imp.where(MODULES)}: {imp.importer} ({layer(imp.importer)}) imports {imp.target} "
        f"({layer(imp.target) if ours(imp.target) else 'third party'})"
        + (f" [{', '.join(imp.names)}]" if imp.names else "")
        for imp in imports
    )


# ----------------------------------------------------------------------------- the tests
def test_the_sources_are_found_and_read():
    assert len(MODULES) > 40
    assert {"jaxtransfer", "jaxtransfer.estimators._base", "jaxtransfer_kernels._ridge"} <= set(MODULES)
    # a few edges the package is known to have, so a parser that finds nothing cannot pass
    edges = {(imp.importer, imp.target) for imp in IMPORTS}
    assert ("jaxtransfer.estimators._base", "jaxtransfer.estimators._checks") in edges  # relative
    assert ("jaxtransfer._streamed", "jaxtransfer_kernels") in edges
    assert ("jaxtransfer", "jaxtransfer.apps") in edges  # lazy, through importlib


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer(m) is None] == [], "add the module to a layer in LAYERS"


def test_imports_name_modules_that_exist():
    missing = [imp for imp in IMPORTS if ours(imp.target) and imp.target not in MODULES]
    assert missing == [], "imports of jaxtransfer modules that do not exist:\n" + show(missing)


def test_kernels_import_only_jax_numpy_and_the_stdlib():
    bad = kernel_violations(IMPORTS)
    assert bad == [], "jaxtransfer_kernels imports only jax, numpy and the stdlib:\n" + show(bad)


def test_no_layer_imports_a_higher_layer():
    bad = upward_imports(IMPORTS)
    assert bad == [], f"layers, lowest first: {', '.join(LAYERS)}; imports going up:\n" + show(bad)


def test_no_import_cycles():
    assert cycles(IMPORTS) == []


def test_no_private_names_from_other_packages():
    found = private_imports(IMPORTS)
    new = sorted(found - KNOWN_PRIVATE_IMPORTS)
    assert new == [], "private names taken from another package directory (give them a public home):\n" + (
        show([imp for imp in IMPORTS if any(imp.importer == a and imp.target.startswith(b) for a, b in new)])
    )
    assert sorted(KNOWN_PRIVATE_IMPORTS - found) == [], "fixed: remove these from KNOWN_PRIVATE_IMPORTS"


def test_apps_and_cli_import_jaxtransfer_at_module_level():
    bad = local_imports_in_apps_and_cli(IMPORTS)
    assert bad == [], "function-local imports of jaxtransfer modules in apps/cli:\n" + show(bad)


# ----------------------------------------------------------------------------- the rules can fail
def _made_up(source: str, name: str, tmp_path) -> list[Import]:
    """The imports of a made-up module ``name`` with ``source``, as if it sat in the package."""
    parts = name.split(".")
    path = tmp_path / f"{parts[-1]}.py"
    path.write_text(source)
    module = Module(name, path, False)
    return collect(module, {**MODULES, name: module})


@pytest.mark.parametrize(
    ("rule", "name", "source"),
    [
        (kernel_violations, "jaxtransfer_kernels._new", "import scipy.linalg\n"),
        (kernel_violations, "jaxtransfer_kernels._new", "from flax import nnx\n"),
        (upward_imports, "jaxtransfer_kernels._new", "from jaxtransfer.estimators import nce\n"),
        (upward_imports, "jaxtransfer.estimators._new", "from jaxtransfer import features\n"),
        (upward_imports, "jaxtransfer.estimators._new", "import jaxtransfer as jt\n"),  # the API
        (upward_imports, "jaxtransfer.features", "from .apps import rank\n"),
        (upward_imports, "jaxtransfer.apps._new", "from jaxtransfer.sources import MLP\n"),  # the API
        (upward_imports, "jaxtransfer.apps._new", "from ..cli import main\n"),
        (private_imports, "jaxtransfer.features", "from .estimators._checks import as_mask\n"),
        (private_imports, "jaxtransfer.apps._new", "from jaxtransfer_kernels._ridge import gram\n"),
        (private_imports, "jaxtransfer.cli._new", "from jaxtransfer.estimators import _base\n"),
        (private_imports, "jaxtransfer.cli._new", "from jaxtransfer.models import _training\n"),
        (private_imports, "jaxtransfer.transfer", "from .models import zoo\nzoo._registry.load()\n"),
        (private_imports, "jaxtransfer.transfer", "import jaxtransfer\njaxtransfer.estimators._checks.x\n"),
        (local_imports_in_apps_and_cli, "jaxtransfer.apps._new", "def f():\n    from .. import models\n"),
        (local_imports_in_apps_and_cli, "jaxtransfer.cli._new", "def f():\n    import jaxtransfer.apps\n"),
    ],
)
def test_each_rule_catches_a_violation(rule, name, source, tmp_path):
    assert rule(_made_up(source, name, tmp_path))


@pytest.mark.parametrize(
    ("rule", "name", "source"),
    [
        (kernel_violations, "jaxtransfer_kernels._new", "import functools\nimport jax.numpy as jnp\n"),
        (upward_imports, "jaxtransfer.apps._new", "from jaxtransfer import estimators, models\n"),
        (upward_imports, "jaxtransfer.zoo", "from .models.zoo import load\n"),
        (private_imports, "jaxtransfer.estimators._new", "from ._checks import as_mask\n"),
        (private_imports, "jaxtransfer.cli._new", "from jaxtransfer._io import read_npz\n"),
        (private_imports, "jaxtransfer.features", "from ._progress import progress_bar\n"),
        (local_imports_in_apps_and_cli, "jaxtransfer.cli._new", "def f():\n    from PIL import Image\n"),
        (local_imports_in_apps_and_cli, "jaxtransfer.models._new", "def f():\n    from . import zoo\n"),
    ],
)
def test_each_rule_allows_what_it_should(rule, name, source, tmp_path):
    assert not rule(_made_up(source, name, tmp_path))


def test_cycles_are_found():
    made_up = [
        Import("jaxtransfer.features", 1, "jaxtransfer.transfer"),
        Import("jaxtransfer.transfer", 1, "jaxtransfer.features"),
    ]
    assert cycles(IMPORTS + made_up) == [["jaxtransfer.features", "jaxtransfer.transfer"]]

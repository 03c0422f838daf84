"""Every module imports (catches broken optional imports), the CLI starts without heavy ones, and
imports run one way: down the layers and along the data flow, never back up, never in a circle.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import repolm

# The house, bottom to top: a module may import from its own layer and the layers below it.
# Each stage is a layer of its own, in data-flow order, so a stage imports only earlier
# stages; within the other layers, the cycle check alone keeps the imports in order. Every
# top-level module or package of repolm is in exactly one layer ("__init__" is the package
# itself); index and serve are planned.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("__init__", "errors", "logs", "fsutil", "gguf", "hub", "config", "layout")),
    ("shared", ("formats", "hardware", "syntax", "lm", "gitrepo", "stage", "split")),
    ("mine", ("mine",)),
    ("chunk", ("chunk",)),
    ("filter", ("filter",)),
    ("tokenize", ("tokenize",)),
    ("dataset", ("dataset",)),  # the build stage
    ("train", ("train",)),
    ("index", ("index",)),  # eval will measure completion with retrieval
    ("eval", ("eval",)),
    ("export", ("export",)),
    ("report", ("report",)),
    ("top", ("pipeline", "doctor", "cli", "__main__", "serve")),
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. repolm.mine.miner
    line: int
    target: str  # the module imported (a submodule where `from pkg import sub` names one)

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package in directory `root`, by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(root: Path, package: str) -> Iterator[Import]:
    """Every import of the package's modules within the package: top-level, function-local and
    `if TYPE_CHECKING:` ones alike, relative ones resolved."""
    mods = modules(root, package)
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_pkg else name.split(".")[:-1]
                    here = here[: len(here) - node.level + 1]
                    base = ".".join([*here, *([node.module] if node.module else [])])
                # `from pkg import sub` imports the submodule; `from mod import name`, mod
                subs = [f"{base}.{a.name}" for a in node.names]
                targets = [sub if sub in mods else base for sub in subs]
            else:
                continue
            for target in dict.fromkeys(targets):  # `from mod import a, b`: one import
                if target != package and not target.startswith(package + "."):
                    continue
                while target not in mods and "." in target:  # a name inside a module
                    target = target.rpartition(".")[0]
                yield Import(name, node.lineno, target)


def unit(module: str) -> str:
    """The top-level module or package a module belongs to (`__init__`: the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_problems(
    root: Path, package: str, layers: Sequence[tuple[str, Sequence[str]]]
) -> list[str]:
    """Modules in no layer or in two, and imports from a higher layer or a later stage."""
    rank: dict[str, int] = {}
    problems = []
    for i, (layer, units) in enumerate(layers):
        for u in units:
            if u in rank:
                problems.append(f"{package}.{u} is in two layers: {layers[rank[u]][0]} and {layer}")
            rank.setdefault(u, i)
    for u in sorted({unit(m) for m in modules(root, package)} - set(rank)):
        problems.append(
            f"{package}.{u} is in no layer: add it to LAYERS in tests/test_imports.py, "
            "below everything that imports it"
        )
    for imp in imports(root, package):
        here, there = unit(imp.module), unit(imp.target)
        if here in rank and there in rank and rank[there] > rank[here]:
            problems.append(
                f"{imp} (layer {layers[rank[there]][0]}, above {layers[rank[here]][0]})"
            )
    return problems


def cycle_problems(root: Path, package: str) -> list[str]:
    """Each cycle between modules (a strongly connected component of more than one module),
    with the imports that close it."""
    edges: dict[str, list[Import]] = {m: [] for m in modules(root, package)}
    for imp in imports(root, package):
        if imp.target != imp.module:
            edges[imp.module].append(imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(m: str) -> None:  # Tarjan's algorithm
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for imp in edges[m]:
            if imp.target not in index:
                visit(imp.target)
                low[m] = min(low[m], low[imp.target])
            elif imp.target in on_stack:
                low[m] = min(low[m], index[imp.target])
        if low[m] == index[m]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == m:
                    break
            components.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))
    for m in sorted(edges):
        if m not in index:
            visit(m)
    problems = []
    for component in sorted(c for c in components if len(c) > 1):
        members = set(component)
        closing = [str(i) for m in component for i in edges[m] if i.target in members]
        problems.append(f"cycle between {', '.join(component)}: " + "; ".join(sorted(closing)))
    return problems


def import_problems(
    root: Path, package: str, layers: Sequence[tuple[str, Sequence[str]]]
) -> list[str]:
    return layer_problems(root, package, layers) + cycle_problems(root, package)


# -- the house -----------------------------------------------------------------------------------


def test_imports_run_one_way() -> None:
    root = Path(repolm.__file__).parent
    problems = import_problems(root, "repolm", LAYERS)
    assert not problems, "imports that run back up or in a circle:\n" + "\n".join(problems)


def test_architecture_doc_draws_the_layers() -> None:
    """docs/architecture.md's picture names every module of LAYERS in its layer's row (the
    stages share one row)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    rows = {line.split()[0]: line for line in text.split("```")[1].splitlines() if line.strip()}
    for layer, units in LAYERS:
        row = rows.get(layer, "") if layer in ("base", "shared", "top") else rows["stages"]
        for u in units:
            assert u in row, f"docs/architecture.md's {layer} row lacks {u}"


def test_every_module_imports() -> None:
    names = [m.name for m in pkgutil.walk_packages(repolm.__path__, "repolm.")]
    assert "repolm.mine.miner" in names
    for name in names:
        if name != "repolm.__main__":
            importlib.import_module(name)


def test_cli_start_up_is_light() -> None:
    code = (
        "import sys, repolm.cli; "
        "print(','.join(m for m in ('pyarrow', 'pydantic', 'torch', 'yaml', 'rich.table') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# -- the checker, on small packages written for it ----------------------------------------------

TOY_LAYERS = (
    ("base", ("__init__", "errors")),
    ("mine", ("mine",)),
    ("chunk", ("chunk",)),
    ("top", ("cli",)),
)


def write_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "toy"
    for rel, text in {"__init__.py": "", **files}.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


CLEAN = {
    "errors.py": "class ToyError(Exception): ...\n",
    "mine/__init__.py": "",
    "mine/git.py": "from toy.errors import ToyError\n",
    "mine/miner.py": "from . import git\nfrom .git import ToyError\n",
    "chunk/__init__.py": "",
    "chunk/stage.py": "import toy.mine.miner\nfrom toy.mine import git\n",
    "cli.py": ("from toy.chunk import stage\n\ndef main():\n    from . import errors\n"),
}


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    assert import_problems(write_package(tmp_path, CLEAN), "toy", TOY_LAYERS) == []


def test_checker_resolves_imports(tmp_path: Path) -> None:
    pkg = write_package(tmp_path, CLEAN)
    found = {(i.module, i.target) for i in imports(pkg, "toy")}
    assert ("toy.mine.miner", "toy.mine.git") in found  # `from . import git`, `from .git import`
    assert ("toy.chunk.stage", "toy.mine.miner") in found
    assert ("toy.chunk.stage", "toy.mine.git") in found  # `from toy.mine import git`
    assert ("toy.mine.git", "toy.errors") in found  # a name inside a module: the module


@pytest.mark.parametrize(
    "source",
    [
        "from toy.chunk.stage import run\n",  # at the top
        "def f():\n    from toy.chunk import stage\n",  # inside a function
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import toy.chunk.stage\n",
        "from ..chunk import stage\n",  # relative
    ],
)
def test_checker_catches_an_upward_import(tmp_path: Path, source: str) -> None:
    pkg = write_package(tmp_path, {**CLEAN, "mine/later.py": source})
    problems = layer_problems(pkg, "toy", TOY_LAYERS)
    assert len(problems) == 1
    assert problems[0].startswith("toy.mine.later:")
    assert "imports toy.chunk" in problems[0] and "(layer chunk, above mine)" in problems[0]


def test_checker_catches_a_cycle(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "mine/a.py": "from toy.mine import b\n",
        "mine/b.py": "def f():\n    from toy.mine.a import x\n",  # hidden in a function
    }
    problems = import_problems(write_package(tmp_path, files), "toy", TOY_LAYERS)
    assert problems == [
        "cycle between toy.mine.a, toy.mine.b: "
        "toy.mine.a:1 imports toy.mine.b; toy.mine.b:2 imports toy.mine.a"
    ]


def test_checker_catches_a_module_in_no_layer(tmp_path: Path) -> None:
    pkg = write_package(tmp_path, {**CLEAN, "helpers.py": ""})
    assert layer_problems(pkg, "toy", TOY_LAYERS) == [
        "toy.helpers is in no layer: add it to LAYERS in tests/test_imports.py, "
        "below everything that imports it"
    ]
    twice = (*TOY_LAYERS, ("more", ("mine",)))
    assert layer_problems(write_package(tmp_path / "clean", CLEAN), "toy", twice) == [
        "toy.mine is in two layers: mine and more"
    ]

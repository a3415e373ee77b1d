"""The package's concepts import one way, down: what a newcomer reads in the folder names holds
in the code. Only imports that run count; a type-only import under ``TYPE_CHECKING`` does not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "plugin" / "ganstop"

# Lower layers never import higher ones. Modules of one concept may import each other.
LAYERS = [
    {"errors", "paths", "masking"},
    {"stopping"},
    {"plugins"},
    {"metrics.registry"},
    {"recipe"},
    {"data", "metrics"},
    {"training"},
    {"tracking"},
    {"study"},
    {"api", "cli"},
    {"__init__", "__main__"},
]
# What each concept must not know (ARCHITECTURE: train.py imports neither mlflow nor optuna, ...)
FORBIDDEN = {"stopping": {"torch", "mlflow", "optuna"}, "training": {"mlflow", "optuna"}, "tracking": {"optuna"},
             "data": {"mlflow", "optuna"}, "metrics": {"mlflow", "optuna"}}
# The curve model's weights are a torch state dict, read with weights_only=True, and its training
# script is torch; both modules load torch only when asked (the forward pass is numpy).
ALLOWED = {"ganstop.stopping.curve_model": {"torch"}, "ganstop.stopping.train_curve_model": {"torch"}}


def _concept(module: str) -> str:
    """``ganstop.metrics.registry`` -> ``metrics.registry``, ``ganstop.training.loop`` -> ``training``."""
    parts = module.split(".")[1:] or ["__init__"]
    if parts[:2] == ["metrics", "registry"]:
        return "metrics.registry"
    return parts[0]


def _layer(module: str) -> int:
    concept = _concept(module)
    return next(i for i, names in enumerate(LAYERS) if concept in names)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _runtime_imports(tree: ast.AST) -> list[str]:
    """Modules imported outside ``if TYPE_CHECKING:`` blocks (at any depth: lazy imports run too)."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from ganstop.metrics import registry` imports the submodule, not the whole concept
            submodules = [f"{node.module}.{alias.name}" for alias in node.names if _is_module(f"{node.module}.{alias.name}")]
            found.extend(submodules or [node.module])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _modules() -> list[tuple[str, list[str]]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)
        out.append((name, _runtime_imports(ast.parse(path.read_text()))))
    return out


MODULES = _modules()


def test_every_module_belongs_to_a_layer():
    for name, _ in MODULES:
        _layer(name)  # raises StopIteration for a module no layer names


@pytest.mark.parametrize("name,imports", MODULES, ids=[name for name, _ in MODULES])
def test_imports_run_down(name, imports):
    upward = [i for i in imports if i.startswith("ganstop.") and _layer(i) > _layer(name)]
    assert not upward, f"{name} imports {upward}, which sit above it"


@pytest.mark.parametrize("name,imports", MODULES, ids=[name for name, _ in MODULES])
def test_each_concept_knows_only_its_libraries(name, imports):
    forbidden = FORBIDDEN.get(_concept(name).split(".")[0], set()) - ALLOWED.get(name, set())
    assert not [i for i in imports if i.split(".")[0] in forbidden], f"{name} imports one of {forbidden}"


def test_the_checker_sees_an_upward_import():
    tree = ast.parse("from ganstop.study.objective import Objective\nif TYPE_CHECKING:\n    import optuna\n")
    assert _runtime_imports(tree) == ["ganstop.study.objective"]
    assert _layer("ganstop.study.objective") > _layer("ganstop.training.loop")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                on_stack.discard(w)
                component.append(w)
            on_stack.discard(v)
            if component:
                found.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_circle_of_imports_at_run_time():
    names = {name for name, _ in MODULES}

    def module(imported: str) -> str:  # `ganstop.training` (a package) or `ganstop.x.Name` -> the module file
        while imported not in names and "." in imported:
            imported = imported.rsplit(".", 1)[0]
        return imported

    graph = {name: {module(i) for i in imports if i.startswith("ganstop.")} - {name} for name, imports in MODULES}
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]

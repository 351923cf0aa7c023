"""The shape of the house, checked on the source: one direction of imports, no cycles (lazy
imports included), small modules, few modules at the root.

Imports are read with ``ast`` from every ``import`` statement wherever it appears (module
level or inside a function), so a function-level import that hides a cycle is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segnext_hub"
# Each layer may import the layers to its left (and the root helpers); never to its right.
LAYERS = ["models", "conversion", "hub", "loading", "training", "timm", "tasks", "cli"]
ROOT_HELPERS = {"errors", "fileio", "datasets", "_version", "progress", "config", "images"}
MAX_LINES = 600
MAX_ROOT_MODULES = 10


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules ``name`` imports, anywhere in its source (TYPE_CHECKING blocks aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    type_checking = {id(node) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
                     and getattr(stmt.test, "id", None) == "TYPE_CHECKING" for node in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imported(name, path, known) for name, path in mods.items()}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the package root re-exports lazily; checked separately
    top = parts[1]
    if top in ROOT_HELPERS or top == "__main__":
        return None
    return top


def test_no_import_cycles_even_through_function_level_imports():
    graph = import_graph()
    # A package's __init__ importing its own submodules is not a cycle with them: drop
    # edges from a submodule to the packages that contain it.
    def edges(name: str) -> set[str]:
        return {t for t in graph[name] if not name.startswith(t + ".")}

    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges(node)):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_flow_one_way():
    wrong = []
    for name, targets in import_graph().items():
        source = layer_of(name)
        if source is None:
            continue
        for target in targets:
            dest = layer_of(target)
            if dest is None or dest == source:
                continue
            if LAYERS.index(dest) > LAYERS.index(source):
                wrong.append(f"{name} imports {target} ({source} may not import {dest})")
    assert not wrong, "\n".join(wrong)


def test_models_import_nothing_else_from_the_package():
    outside = [f"{name} -> {t}" for name, targets in import_graph().items() if name.startswith("segnext_hub.models")
               for t in targets if not t.startswith("segnext_hub.models")]
    assert not outside, outside


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_the_size_limit(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines (limit {MAX_LINES})"


def test_few_modules_at_the_root_and_a_docstring_per_subpackage():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) >= 2, f"{init.parent.name}/ needs a docstring saying what it owns"


def test_every_subpackage_ships_in_the_wheel():
    """setuptools' explicit ``packages`` list: a subpackage missing from it is silently left
    out of every installed copy while the editable checkout keeps working."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(init.parent / "__init__.py") for init in PACKAGE.rglob("__init__.py")}
    assert found - listed == set()


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        base = func.value
        prefix = f"{base.id}." if isinstance(base, ast.Name) else f"{_attr_path(base)}." if isinstance(
            base, ast.Attribute) else "?."
        return prefix + func.attr
    return ""


def _attr_path(node: ast.Attribute) -> str:
    base = node.value
    head = base.id if isinstance(base, ast.Name) else _attr_path(base) if isinstance(base, ast.Attribute) else "?"
    return f"{head}.{node.attr}"


# Library layers report through logging/warnings; only cli/ (and the demo task, a script
# run by `make demo`) write to the terminal.
QUIET = ("models", "conversion", "hub", "training", "loading.py", "fileio.py", "datasets.py", "config.py")


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_exec_eval_and_no_printing_below_the_cli(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = [_called_name(call) for call in _calls(tree)]
    assert not [n for n in names if n in ("exec", "eval", "builtins.exec", "builtins.eval")], \
        f"{path.relative_to(PACKAGE)} calls exec/eval"
    relative = path.relative_to(PACKAGE)
    if relative.parts[0] in QUIET or str(relative) in QUIET:
        printing = [n for n in names if n == "print" or n.endswith(("stderr.write", "stdout.write"))]
        assert not printing, f"{relative} prints ({printing}); log or warn instead"


def test_only_the_config_module_builds_a_config_dict():
    """A dict literal holding both "variant" and "md_r" is a second, untyped copy of
    ArtifactConfig: it must be built by segnext_hub/config.py alone."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if {"variant", "md_r"} <= keys:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            if isinstance(node, ast.Call) and _called_name(node) == "dict":
                keys = {k.arg for k in node.keywords}
                if {"variant", "md_r"} <= keys:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, found


def test_the_checks_above_can_fail(tmp_path):
    """The AST probes see what they are meant to (so an empty result means something)."""
    tree = ast.parse("exec('1')\nimport sys\nsys.stderr.write('x')\nprint(1)\n")
    assert [_called_name(c) for c in _calls(tree)] == ["exec", "sys.stderr.write", "print"]

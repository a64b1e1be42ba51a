"""The house keeps its plan: imports run one way between the packages (resources at the bottom, then the quality
machinery, the medallion layers, protection and the macro flow, the lake's upkeep, security, the operator
tools, and the one assembly point), no module imports itself back through a circle, and no project import
hides inside a function to dodge one. Read from the source with `ast`, so a new module is judged the moment it
exists."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("platform_assets", "resources", "sensors")

# Within platform_assets: a package may import only the packages ranked below it (and itself).
PLATFORM_RANKS = {"quality": 0, "layers": 1, "protection": 2, "macro": 2, "lake": 3, "security": 4,
                  "definitions": 5, "ops": 6}
# Within resources: the shared modules at the top of the package, then the databases, the lake, the checkpoint
# store (which reads databases and writes the lake) and the HTTP sources (their state lives in the lake).
RESOURCE_RANKS = {"": 0, "databases": 1, "lake": 2, "checkpoints": 3, "http": 3, "capture": 4}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def _target(name: str, imported: str | None = None) -> str | None:
    """The project module an import statement reaches (a submodule when `from package import submodule`)."""
    if imported and f"{name}.{imported}" in MODULES:
        return f"{name}.{imported}"
    return name if name in MODULES else None


def imports(module: str) -> tuple[set[str], list[str]]:
    """The project modules `module` imports at its top level, and those it imports inside a function."""
    tree = ast.parse(MODULES[module].read_text())
    top, hidden = set(), []
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    inside = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        reached: list[str] = []
        if isinstance(node, ast.Import):
            reached = [t for alias in node.names if (t := _target(alias.name))]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            reached = [t for alias in node.names if (t := _target(node.module, alias.name))]
        if id(node) in inside:
            hidden += reached
        else:
            top |= set(reached)
    return top - {module}, hidden


GRAPH = {module: imports(module)[0] for module in MODULES}


def _rank(module: str) -> tuple[str, str, int] | None:
    """(top package, package within it, its rank); the shared modules at the top of resources are one package."""
    parts = module.split(".")
    if parts[0] == "platform_assets" and len(parts) > 1:
        return "platform_assets", parts[1], PLATFORM_RANKS[parts[1]]
    if parts[0] == "resources" and len(parts) > 1:
        package = parts[1] if parts[1] in RESOURCE_RANKS else ""
        return "resources", package, RESOURCE_RANKS[package]
    return None


def test_every_package_of_platform_assets_and_resources_has_a_rank():
    for module in MODULES:
        parts = module.split(".")
        if parts[0] == "platform_assets" and len(parts) > 1:
            assert parts[1] in PLATFORM_RANKS, f"{module}: a new package of platform_assets needs its place here"


def test_imports_run_one_way_between_packages():
    wrong = []
    for module, targets in GRAPH.items():
        for target in targets:
            if module.startswith("resources") and target.split(".")[0] in ("platform_assets", "sensors"):
                wrong.append(f"{module} -> {target}: resources import nothing of the platform")
            elif module.startswith("sensors") and target.startswith("platform_assets"):
                wrong.append(f"{module} -> {target}: sensors import resources and asset keys, not assets")
            elif target in ("resources", "platform_assets") and module.startswith(target + "."):
                wrong.append(f"{module} -> {target}: the package's exports sit above its modules")
            elif (mine := _rank(module)) and (theirs := _rank(target)) and mine[0] == theirs[0]:
                if mine[1] != theirs[1] and theirs[2] >= mine[2]:
                    wrong.append(f"{module} -> {target}: {theirs[1] or 'the shared modules'} is not below "
                                 f"{mine[1] or 'the shared modules'}")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_itself_back_through_a_circle():
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_project_import_hides_inside_a_function(module):
    assert not imports(module)[1], f"{module} imports {imports(module)[1]} inside a function"


def test_the_judge_sees_a_circle_and_a_hidden_import(tmp_path, monkeypatch):
    """The checks above can fail: a made-up pair of modules importing each other, one of them inside a function."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from platform_assets.zz_b import x\n")
    b.write_text("def f():\n    from platform_assets.zz_a import y\n")
    monkeypatch.setitem(MODULES, "platform_assets.zz_a", a)
    monkeypatch.setitem(MODULES, "platform_assets.zz_b", b)
    assert imports("platform_assets.zz_a") == ({"platform_assets.zz_b"}, [])
    assert imports("platform_assets.zz_b") == (set(), ["platform_assets.zz_a"])

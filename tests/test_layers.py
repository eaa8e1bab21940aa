"""The layers of BUILD.md's "Architecture", held against every import in the library (those
inside functions too): a module imports only its own layer or lower ones, the modules import
one another in no circle, nothing in the library imports `flaxcls.testing`, and the benchmarks
import nothing from tests/. A failure names the file and the import; move the code to the layer
where it belongs rather than adding an exception here."""

from __future__ import annotations

import ast
import functools
import os

from flaxcls.testing.launch import ROOT

# Lowest first; a module may import its own layer and those before it.
LAYERS = (
    ("errors", ("flaxcls.errors",)),
    ("models and data", ("flaxcls.models", "flaxcls.data")),
    ("core", ("flaxcls.core",)),
    ("rundir", ("flaxcls.rundir",)),
    ("config", ("flaxcls.config",)),
    ("modes", ("flaxcls.modes",)),
    ("testing", ("flaxcls.testing",)),
)
# The data API checks its keywords with the training config's rules (a lazy import): the one
# upward import left, until the data rules live below the data package (BUILD.md).
KNOWN_UPWARD = {("flaxcls.data.api", "flaxcls.config")}


def _layer(module: str) -> int | None:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def _module_name(path: str) -> str:
    relative = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
    return relative.removesuffix(".__init__")


def _imports(path: str, package: str) -> set[str]:
    """Every flaxcls module `path` imports; `from flaxcls.x import y` counts as flaxcls.x.y
    where y is a module, else as flaxcls.x."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("flaxcls"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("flaxcls"):
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                as_file = os.path.join(ROOT, *candidate.split(".")) + ".py"
                as_package = os.path.join(ROOT, *candidate.split("."), "__init__.py")
                is_module = os.path.exists(as_file) or os.path.exists(as_package)
                found.add(candidate if is_module else node.module)
    return {m for m in found if m != package}


@functools.cache
def _library() -> dict[str, set[str]]:
    graph = {}
    for directory, _, files in os.walk(os.path.join(ROOT, "flaxcls")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                module = _module_name(path)
                package = module if name == "__init__.py" else module.rpartition(".")[0]
                graph[module] = _imports(path, package)
    return graph


def test_every_library_module_has_a_layer():
    faces = {"flaxcls"}  # the public API re-exports from every layer
    unplaced = [m for m in _library() if m not in faces and _layer(m) is None]
    assert not unplaced, f"modules on no layer of BUILD.md: {unplaced}"


def test_no_upward_import():
    upward = []
    for module, imported in _library().items():
        low = _layer(module)
        for target in imported:
            high = _layer(target)
            if low is None or high is None or high <= low:
                continue
            if (module, target) not in KNOWN_UPWARD:
                upward.append(f"{module} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_known_upward_import_is_still_there():
    """Once it is gone, drop it from KNOWN_UPWARD so that it cannot come back."""
    graph = _library()
    for module, target in KNOWN_UPWARD:
        assert target in graph[module], f"{module} no longer imports {target}: remove it"


def test_no_circle_between_modules():
    graph = {m: {t for t in ts if t in _library()} for m, ts in _library().items()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join((*path, module)))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_library_never_imports_testing():
    users = [
        m
        for m, ts in _library().items()
        if not m.startswith("flaxcls.testing") and any(t.startswith("flaxcls.testing") for t in ts)
    ]
    assert not users, f"library modules importing flaxcls.testing: {users}"


def test_benchmarks_import_nothing_from_tests():
    offenders = []
    directory = os.path.join(ROOT, "benchmarks")
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{name}: {m}" for m in modules if m == "tests" or m.startswith("tests.")]
    assert not offenders, offenders

"""Layers point one way: no module of Composer imports from a layer above its own (a lazy
import inside a function counts too).

0. errors, specs (``composer.spec``), the block and loss registry, metrics
1. block and loss configs (``composer.configs``: torch-free) and neural layers (``composer.layers``)
2. blocks and losses
3. the compiler: blueprint language and loading, the graph (plan, size, model), data
4. train, search, render, bench, profiling, export, testing helpers
5. the CLI and what documents it (``commands``, ``cli``, ``docs_gen``)
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "composer"
LAYERS = [
    {"errors", "spec", "ref", "registry", "metrics", "metric_names"},
    {"configs", "layers"},
    {"blocks", "losses"},
    {"blueprint", "graph", "data"},
    {"train", "search", "render", "bench", "profiling", "export", "testing", "_callable", "zoo_import"},
    {"commands", "cli", "__main__", "docs_gen"},
]


def layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "composer" or len(parts) < 2:
        return None
    found = [i for i, names in enumerate(LAYERS) if parts[1] in names]
    assert found, f"{module}: add its top-level name to a layer in tests/test_layers.py"
    return found[0]


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def test_no_import_runs_back_up():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("composer", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        mine = layer(module)
        if mine is None:  # the package itself: its __init__ gathers the public API from every layer
            continue
        for name, line in imports(path):
            theirs = layer(name)
            if theirs is not None and theirs > mine:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} (layer {mine}) imports {name} (layer {theirs})")
    assert not upward, "\n".join(upward)


def test_every_module_has_a_layer():
    for path in PACKAGE.iterdir():
        if path.name.startswith(".") or path.name == "__pycache__" or path.name == "__init__.py":
            continue
        layer(f"composer.{path.stem}")


def test_the_graph_does_not_import_the_blueprint_language():
    """One direction between the two halves of layer 3: ``blueprint/`` (loading, the check) runs
    the graph's passes; ``graph/`` (plan, size, model) takes checked objects and never imports back."""
    back = [f"{path.relative_to(PACKAGE.parent)}:{line}: imports {name}"
            for path in sorted((PACKAGE / "graph").rglob("*.py")) for name, line in imports(path)
            if name.startswith("composer.blueprint")]
    assert not back, "\n".join(back)

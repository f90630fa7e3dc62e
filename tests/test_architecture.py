"""The import graph of `mixmo_search`, read from the source (every import a module runs, late
ones inside functions included; `if TYPE_CHECKING:` blocks excluded, they never run).

- no import cycle;
- imports go one way, from a layer to the same or a lower one (ARCHITECTURE.md draws them);
- the trainer core imports no Ray, MLflow, Optuna or Streamlit;
- promotion and the served model never import the trainer, even through another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mixmo_search"
# lowest first; a module may import its own layer and the layers below it
LAYERS = [
    ["errors", "files", "yaml_io"],
    ["models", "models.registry", "models.weight_init", "models.mixmo", "models.wrn",
     "models.preact_resnet"],
    ["config", "references"],
    ["data", "images", "datasets", "mixing", "metrics", "predictions", "checkpoint", "pareto",
     "uncertainty", "corruptions", "corruption_files", "ood"],
    ["inference", "cost", "step", "ensembles", "robustness", "preflight"],
    ["train"],
    ["tracking", "tracking_auth"],
    ["trial_table"],
    ["search", "search.types", "search.fields", "search.samplers", "search.placement",
     "search.study_storage", "search.tracking_queue", "search.schema", "search.space_check",
     "search.space",
     "search.outcomes", "search.record", "search.signals", "search.scheduler",
     "search.retention", "search.hold", "search.actor_reuse",
     "search.cluster", "search.optuna_search", "search.trainable",
     "search.lost_trials", "search.mlflow_callback", "search.progress", "search.summary",
     "search.plan", "search.run"],
    ["serving", "promote", "predict", "tune"],
]  # fmt: skip
TRAINER_CORE = [m for layer in LAYERS[:6] for m in layer]
SERVICES = ("ray", "mlflow", "optuna", "streamlit")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        found[name.removesuffix(".__init__") or "__init__"] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Absolute names of what the module imports when it runs (any depth, no TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import submodule` depends on the submodule (a package's __init__ runs
            # first for any of its modules, which is no dependency of the importer's)
            full = [f"{node.module}.{alias.name}" for alias in node.names]
            names |= {n for n in full if _own(n) == _strip(n)}
            if any(_own(n) != _strip(n) for n in full):
                names.add(node.module)
    return names


def _strip(name: str) -> str:
    return name.removeprefix("mixmo_search").lstrip(".")


def _own(name: str) -> str | None:
    """The package module `name` refers to (`mixmo_search.a.b` or a name inside it)."""
    if not name.startswith("mixmo_search"):
        return None
    parts = name.removeprefix("mixmo_search").lstrip(".")
    while parts and parts not in MODULES:
        parts = parts.rpartition(".")[0]
    return parts or None


GRAPH = {
    module: {own for name in _imports(path) if (own := _own(name)) and own != module}
    for module, path in MODULES.items()
    if module != "__init__"
}


def test_every_module_has_a_layer():
    placed = {m for layer in LAYERS for m in layer}
    assert set(GRAPH) == placed, set(GRAPH) ^ placed


def test_no_import_cycle():
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError(" -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for imported in sorted(GRAPH[module]):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_down_the_layers(module):
    layer = {m: i for i, ms in enumerate(LAYERS) for m in ms}
    upward = sorted(m for m in GRAPH[module] if layer[m] > layer[module])
    assert not upward, f"{module} (layer {layer[module]}) imports a higher layer: {upward}"


@pytest.mark.parametrize("module", TRAINER_CORE)
def test_the_trainer_core_imports_no_service(module):
    services = {n.split(".")[0] for n in _imports(MODULES[module])} & set(SERVICES)
    assert not services, f"{module} imports {services}"


@pytest.mark.parametrize("module", ["serving", "promote", "predict"])
def test_promotion_and_serving_never_import_the_trainer(module):
    reached, todo = set(), [module]
    while todo:
        for imported in GRAPH[todo.pop()] - reached:
            reached.add(imported)
            todo.append(imported)
    assert "train" not in reached and "step" not in reached, sorted(reached)

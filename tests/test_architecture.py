"""The package's layers (docs/ARCHITECTURE.md): imports point down, configuration is a leaf.

Read from the source with `ast` (nothing is imported): every `alexnet_tf` import
of every module, checked against the layer table below, which
docs/ARCHITECTURE.md shows.
"""

import ast
import os
import sys

import pytest

from helpers import REPO

# Bottom to top. A module may import from its own layer (without a cycle) or a lower one.
LAYERS = [
    ("constants", {"paper", "errors", "imagenet", "quiet"}),
    ("configuration", {"config"}),
    ("foundations", {"files", "hardware", "caffe", "metrics", "preprocessing", "optimizer",
                     "schedule", "weights", "shapes_dataset"}),
    ("network", {"layers", "models"}),
    ("data", {"sources", "dataset_stats", "input_pipeline", "retrieval"}),
    ("runs", {"rundir", "state", "restore", "runtime", "summaries", "figures", "report",
              "ownership", "deploy"}),
    ("jobs", {"train", "finetune", "evaluate", "export", "import_caffe"}),
    ("applications", {"applications", "study", "benchmark", "__init__"}),
    ("cli", {"cli"}),
]
PACKAGE = os.path.join(REPO, "alexnet_tf")


def module_names():
    names = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                relative = os.path.relpath(os.path.join(folder, name), PACKAGE)[:-3]
                names.append(relative.replace(os.sep, "."))
    return sorted(names)


def layer_of(module):
    top = module.split(".")[0]
    for index, (_, members) in enumerate(LAYERS):
        if top in members or module in members:
            return index
    raise AssertionError(f"alexnet_tf/{module}.py is in no layer of LAYERS (docs/ARCHITECTURE.md)")


def imports_of(module):
    """The alexnet_tf modules that `module` imports (`from alexnet_tf import x` counts x)."""
    path = os.path.join(PACKAGE, *module.split(".")) + ".py"
    tree = ast.parse(open(path, encoding="utf-8").read())
    known = set(module_names())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name[len("alexnet_tf."):] for a in node.names
                      if a.name.startswith("alexnet_tf.")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alexnet_tf"):
            base = node.module[len("alexnet_tf."):] if node.module != "alexnet_tf" else ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}".strip(".")
                found.add(candidate if candidate in known else base)
    return {name for name in found if name and name != module}


def test_every_module_has_a_layer_and_imports_point_down():
    wrong = []
    for module in module_names():
        for imported in imports_of(module):
            if layer_of(imported) > layer_of(module):
                wrong.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {imported} "
                             f"({LAYERS[layer_of(imported)][0]})")
    assert not wrong, "imports that point up:\n" + "\n".join(wrong)


def test_configuration_imports_only_paper_and_errors():
    assert imports_of("config") <= {"paper", "errors"}


def test_no_import_cycle():
    graph = {module: imports_of(module) for module in module_names()}
    done, active = set(), []

    def visit(module):
        if module in active:
            pytest.fail("import cycle: " + " -> ".join(active[active.index(module):] + [module]))
        if module in done:
            return
        active.append(module)
        for imported in sorted(graph.get(module, ())):
            visit(imported)
        active.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

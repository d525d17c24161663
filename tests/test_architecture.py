"""The package's layers (docs/ARCHITECTURE.md): imports point down, configuration is a leaf.

Read from the source with `ast` (nothing is imported): every `alexnet_tf` import
of every module, checked against the layer table below, which
docs/ARCHITECTURE.md shows.
"""

import ast
import os
import sys

import pytest

from helpers import REPO, assert_equal

# The layers (docs/ARCHITECTURE.md), bottom to top: each may import the ones it names, the
# foundation and itself (without a cycle). `data` and `model` stand side by side on the foundation.
FOUNDATION = {"paper", "config", "errors", "files", "hardware", "metrics", "quiet", "version",
              "figures"}
API = {"applications", "selfcheck", "__init__"}
MAY_IMPORT = {
    "foundation": set(),
    "data": set(),
    "model": set(),
    "training": {"data", "model"},
    "serving": {"data", "model", "training"},
    "analysis": {"data", "model", "training", "serving"},
    "api": {"data", "model", "training", "serving", "analysis"},
    "cli": {"data", "model", "training", "serving", "analysis", "api"},
}
FOLDERS = ("data", "model", "training", "serving", "analysis", "cli")
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
    if top in FOLDERS:
        return top
    if module in FOUNDATION:
        return "foundation"
    if module in API:
        return "api"
    raise AssertionError(f"alexnet_tf/{module}.py is in no layer (FOUNDATION, API or a folder; "
                         "docs/ARCHITECTURE.md)")


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


def test_every_module_has_a_layer_and_imports_only_the_layers_below_it():
    wrong = []
    for module in module_names():
        layer = layer_of(module)
        for imported in imports_of(module):
            other = layer_of(imported)
            if other not in {layer, "foundation"} | MAY_IMPORT[layer]:
                wrong.append(f"{module} ({layer}) imports {imported} ({other})")
    assert not wrong, "imports across the layers' rule:\n" + "\n".join(wrong)


def test_the_package_root_holds_the_foundation_the_api_and_the_folders():
    entries = {name for name in os.listdir(PACKAGE) if name != "__pycache__"}
    data = {"selfcheck_reference.npz"}          # the self-check's stored outputs, beside it
    assert entries == {f"{m}.py" for m in FOUNDATION | API} | set(FOLDERS) | data
    for folder in FOLDERS:
        init = os.path.join(PACKAGE, folder, "__init__.py")
        assert ast.get_docstring(ast.parse(open(init, encoding="utf-8").read())), init
        assert not imports_of(f"{folder}.__init__"), f"{init} imports (it only says what it owns)"


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


BEFORE = os.path.join(REPO, "tests", "data", "before_layout")


def test_files_written_before_the_layout_load_and_resume(tmp_path):
    """A `.keras` file and a run checkpoint written by the code before the layered layout
    (tests/data/before_layout/README.md) load with today's: the same serialization names,
    the same outputs, and every checkpoint value back in its object under its name."""
    import keras
    import numpy as np
    import tensorflow as tf

    import alexnet_tf
    from alexnet_tf.training import state
    from alexnet_tf.training.schedule import LearningRateSchedule

    expected = np.load(os.path.join(BEFORE, "expected.npz"))
    images = (np.arange(4 * 256 * 256 * 3).reshape(4, 256, 256, 3) * 7919 % 251).astype("uint8")
    model = keras.saving.load_model(os.path.join(BEFORE, "small.keras"))
    np.testing.assert_allclose(model.predict(images, verbose=0), expected["logits"],
                               rtol=1e-5, atol=1e-6)
    assert type(model.optimizer) is alexnet_tf.PaperSGD
    assert (model.optimizer.momentum, model.optimizer.coupled_weight_decay) == (0.9, 5e-4)

    # The checkpoint restored into a fresh copy (new weights), as a resumed run restores it.
    fresh = keras.Model.from_config(model.get_config())
    optimizer = alexnet_tf.PaperSGD(0.5, 0.9, 5e-4)
    optimizer.build(fresh.trainable_variables)
    step, epoch = state.counters()
    schedule = LearningRateSchedule(0.01, "cosine", total_steps=10, warmup_steps=2)
    schedule.drive(optimizer)
    checkpoint = state.checkpoint_of(fresh, step, epoch, optimizer, schedule)
    checkpoint.restore(tf.train.latest_checkpoint(BEFORE)).assert_existing_objects_matched()
    assert (int(step), int(epoch)) == (1, 1)
    for kept, loaded in zip(fresh.weights, model.weights):
        assert_equal(kept.numpy(), loaded.numpy())
    written = tf.train.CheckpointManager(checkpoint, str(tmp_path), 1).save(checkpoint_number=2)
    values = {f"ckpt:{name}": tf.train.load_variable(written, name)
              for name, _ in tf.train.list_variables(written)
              if not name.startswith(("_CHECKPOINTABLE", "save_counter"))}   # (saves counted)
    assert set(values) == {k for k in expected if k.startswith("ckpt:") and "save_counter" not in k}
    for name, value in values.items():
        assert_equal(value, expected[name], name)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

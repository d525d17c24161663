"""alexnet-summary: the network a run trained, or the one the flags (or a flagfile) describe.

    alexnet-summary --model_dir=runs/quickstart       # the run's own network
    alexnet-summary --flagfile=flags/quickstart.cfg   # what that recipe would build

Prints the options, then one row per layer (output shape, parameters, tower,
inputs: where the towers meet), then the totals per tower. Plain text at any
width: nothing is cut when piped.
"""

import os

from absl import app, flags

from alexnet_tf import config
from alexnet_tf.cli import common, model_flags
from alexnet_tf.data import shapes_dataset
from alexnet_tf.model.network import build_alexnet
from alexnet_tf.training.restore import build_model
from alexnet_tf.training.rundir import RUN_CONFIG, RunDir

FLAGS = flags.FLAGS
# alexnet-train's flags, so that its flagfiles parse here; the model's come from model_flags.
config.define_flags(config.TrainConfig, require_model_dir=False)
flags.DEFINE_integer("num_classes", None, "Classes of the output layer (default: the run's; "
                     "without a run, 10 for the built-in dataset, else 1000).")
common.path_flags(model_dir=common.IN_DIR)


def _shape(shape):
    return "x".join(str(d) for d in shape[1:])


def _tower(name):
    return name.rsplit("_", 1)[1] if name[-2:] in ("_a", "_b") else "-"


def _inputs(layer):
    nodes = getattr(layer, "_inbound_nodes", [])
    tensors = nodes[0].input_tensors if nodes else []
    return ", ".join(t._keras_history.operation.name for t in tensors)


def table(model):
    """The layer rows and totals as lines of plain text."""
    rows = [("layer", "kind", "output", "parameters", "tower", "inputs")]
    totals = {}
    for layer in model.layers:
        params = layer.count_params()
        tower = _tower(layer.name)
        totals[tower] = totals.get(tower, 0) + params
        kind = type(layer).__name__.replace("Placed", "")
        rows.append((layer.name, kind, _shape(layer.output.shape), f"{params:,}", tower,
                     _inputs(layer)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [c.rjust(w) if i == 3 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    split = ", ".join(f"tower {t}: {n:,}" for t, n in sorted(totals.items()) if t != "-")
    lines.append(f"parameters: {model.count_params():,}" + (f" ({split})" if split else ""))
    return lines


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    run_dir = FLAGS.model_dir
    if run_dir and os.path.exists(os.path.join(run_dir, RUN_CONFIG)):
        run = RunDir(run_dir).read()
        if FLAGS.num_classes not in (None, run.num_classes):
            raise app.UsageError(f"--num_classes={FLAGS.num_classes}, but the run in {run_dir} "
                                 f"has {run.num_classes} classes (leave it out)")
        model, options = build_model(run_dir, run, initialize=False), run.config.model
        source = f"the network of the run in {run_dir} ({RUN_CONFIG})"
        classes = run.num_classes
    else:
        if run_dir:
            common.warn("summary", f"{run_dir} is not a run directory (no {RUN_CONFIG}); "
                        "showing the network the flags describe")
        options = model_flags.model_config()
        classes = FLAGS.num_classes or (len(shapes_dataset.CLASS_NAMES)
                                        if FLAGS.dataset.split("/")[0] == config.BUILT_IN else 1000)
        model = build_alexnet(classes, options, initialize=False)     # shapes and counts only
        source = "the network the flags describe"
    print(f"AlexNet: {source}, {classes} classes, input {_shape(model.input.shape)}")
    print("options: " + ", ".join(f"{k}={v}" for k, v in vars(options).items()))
    print()
    for line in table(model):
        print(line)


def run():
    common.run_tool("summary", main)


if __name__ == "__main__":
    run()

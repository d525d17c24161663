"""A run's model rebuilt from its directory: the network options it recorded, a checkpoint's weights.

Every tool that reads a trained run (eval, export, predict, retrieve, figures,
fine-tuning, the Python API) comes through here, so the run directory's own
module (`rundir`) needs only the configuration and its files.

Example:

    model, run, path = restore_model("runs/quickstart", "best")
"""

from alexnet_tf.model.network import build_alexnet
from alexnet_tf.training import runtime, state
from alexnet_tf.training.rundir import RunDir


def _run_dir(run_dir):
    return run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)


def build_model(run_dir, run=None, devices=None, precision=None, initialize=True):
    """The run's model, its towers on `devices` (None: unplaced), computing in `precision`
    (None: as the Keras dtype policy is set); freshly initialised, or with `initialize=False`
    zeros for the caller to set (`build_alexnet`)."""
    run = run or _run_dir(run_dir).read()
    with runtime.dtype_policy(precision):
        return build_alexnet(run.num_classes, run.config.model, devices=devices,
                             initialize=initialize)


def restore_model(run_dir, which="best", devices=None, precision=None):
    """(model, run, checkpoint path): the run's model with the checkpoint `which` restored.

    Args:
      run_dir: A `RunDir` or its path.
      which: "best", "latest", or a checkpoint path (DIR/ckpt-N); see `RunDir.checkpoint`.
      devices: Tower placement (None: unplaced).
      precision: What it computes in: float32, bfloat16 or float16 (variables stay float32);
        None: as the Keras dtype policy is set.

    A run trained with --ema gives its moving averages of the weights, as its validation did.
    """
    run_dir = _run_dir(run_dir)
    run = run_dir.read()
    model = build_model(run_dir, run, devices, precision, initialize=False)
    path = run_dir.checkpoint(which)
    state.restore_weights(model, path)        # every weight, or a one-line refusal
    state.load_averages(model, run.config, path)      # --ema: the averaged weights
    return model, run, path

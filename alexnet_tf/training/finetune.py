"""Fine-tuning: start a run from another run's weights (`--init_from`) and choose what trains.

* `Source.locate(path)`: a run directory (its best checkpoint) or one of its
  checkpoints (DIR/ckpt-N, DIR/best/ckpt-N).
* `with_source_settings`: the new run takes the source's network options
  (the weights only mean something in the network they were trained in) and,
  unless `--nosource_stats`, its statistics and preprocessing (mean, input
  scale, resize), which the pretrained features expect.
* `load_matching`: every variable whose name and shape match is copied; the
  others (fc8 when the class count differs) keep their fresh initialisation.
* `--train_layers` / `--freeze` (`config.frozen_layers`, `models.freeze`) make
  layers non-trainable, so they get no gradient, no velocity and no weight
  decay: they stay bit-identical.

Example:

    source = Source.locate("runs/bvlc_alexnet")
    config = with_source_settings(config, source)
    ...
    loaded, initialised = load_matching(model, source)
"""

import dataclasses
import os

from alexnet_tf import errors
from alexnet_tf.model.network import base_name, copy_matching
from alexnet_tf.training.restore import restore_model
from alexnet_tf.training.rundir import RUN_CONFIG, RunDir

# Network options that are the training recipe's, not the weights': they stay the new run's.
RECIPE_MODEL_OPTIONS = ("dropout_rate", "devices")
SOURCE_PREPROCESSING = ("mean_mode", "input_scale", "resize")


class FineTuneError(errors.UserError):
    """An --init_from that cannot be used; the message is one line."""


@dataclasses.dataclass
class Source:
    """The run (and checkpoint) a fine-tuning run starts from."""
    run_dir: RunDir
    which: str           # "best", or a checkpoint path

    @classmethod
    def locate(cls, path, what="--init_from"):
        """A run directory, or a checkpoint path inside one (up to two levels down).

        `what` names the argument in the one-line error (`--init_from`, `weights`).
        """
        path = os.path.normpath(path)
        if os.path.isdir(path):
            if not os.path.exists(os.path.join(path, RUN_CONFIG)):
                raise FineTuneError(f"{what}={path} is not a run directory (no {RUN_CONFIG}); "
                                    "pass a --model_dir of alexnet-train or alexnet-import, or a "
                                    "checkpoint in one (DIR/ckpt-N)")
            return cls(RunDir(path), "best")
        if not os.path.exists(path + ".index"):
            raise FineTuneError(f"{what}={path} is neither a run directory nor a checkpoint "
                                f"({path}.index does not exist)")
        folder = os.path.dirname(path)
        for candidate in (folder, os.path.dirname(folder)):
            if os.path.exists(os.path.join(candidate, RUN_CONFIG)):
                return cls(RunDir(candidate), path)
        raise FineTuneError(f"{what}={path}: its run directory (with {RUN_CONFIG}) is not "
                            "beside it; the run's options are needed to rebuild its network")


def with_source_settings(config, source, log=print):
    """`config` with the source's network options and (config.source_stats) preprocessing."""
    run = source.run_dir.read()
    model = dataclasses.replace(run.config.model, **{
        name: getattr(config.model, name) for name in RECIPE_MODEL_OPTIONS})
    changes = {"model": model}
    if config.source_stats:
        changes.update({name: getattr(run.config, name) for name in SOURCE_PREPROCESSING})
    adopted = dataclasses.replace(config, **changes)
    differing = [f"{name}={getattr(model, name)}" for name in _fields(model)
                 if getattr(model, name) != getattr(config.model, name)]
    differing += [f"{name}={changes[name]}" for name in SOURCE_PREPROCESSING
                  if name in changes and changes[name] != getattr(config, name)]
    if differing:
        log(f"From {source.run_dir.path}: {', '.join(differing)} (the source's"
            f"{'' if config.source_stats else ' network'}; its weights expect them)")
    if config.source_stats:
        log(f"Using {source.run_dir.path}'s statistics (mean, PCA) and preprocessing, which its "
            "features expect (--nosource_stats: this dataset's)")
    return adopted


def _fields(config):
    return [f.name for f in dataclasses.fields(config)]


def load_matching(model, source, log=print):
    """Copies the source checkpoint's variables into `model` where name and shape match.

    Returns (loaded, initialised): lists of variable paths.
    """
    source_model, run, path = restore_model(source.run_dir, source.which)
    loaded, initialised = copy_matching(source_model, model)
    log(f"Initialised from {path}: loaded {_layers(loaded)} ({len(loaded)} variables); "
        f"freshly initialised {_layers(initialised) or 'nothing'}"
        + (f" ({run.num_classes} classes there, {model.output_shape[-1]} here)"
           if run.num_classes != model.output_shape[-1] else ""))
    return loaded, initialised


def _layers(paths):
    """'conv1_a/kernel', 'conv1_a/bias', ... -> 'conv1_a, ...' in model order."""
    names = []
    for path in paths:
        name = path.split("/")[0]
        if name not in names:
            names.append(name)
    return ", ".join(names)

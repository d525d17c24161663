"""Where and in what precision a run computes: strategy, tower devices, precision, XLA.

`resolve(recipe, strategy)` makes every such choice once, at the start of a
run, with its reason (the run prints and records them); `hardware` holds the
rules, this module applies them to a run.
"""

import contextlib
import dataclasses

import keras
import tensorflow as tf

from alexnet_tf import errors, hardware
from alexnet_tf.config import PER_PRECISION
from alexnet_tf.model.network import resolve_tower_devices

LOCAL_TASK = "local"   # a single-process run (default or mirrored strategy)


def task_of(strategy):
    """(is_chief, tag) of this process: the chief writes the run's files, others write aside."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type is None:
        return True, LOCAL_TASK
    task_id = int(resolver.task_id or 0)
    jobs = resolver.cluster_spec().as_dict()
    chief = task_type == "chief" if "chief" in jobs else (task_type == "worker" and task_id == 0)
    return chief, f"{task_type}_{task_id}"


def is_default_strategy(strategy):
    return strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy()


def tower_devices(config, strategy):
    """The towers' devices for `build_alexnet`: placed under the default strategy only."""
    devices = config.model.build_kwargs()["devices"]
    if is_default_strategy(strategy):
        return resolve_tower_devices(devices)
    if devices not in ("auto", None):
        raise errors.ConfigError(
            "tower placement (--towers_on) and data parallelism (--strategy) are alternatives: "
            "each replica holds the whole model; use --towers_on=none")
    return None   # TF ignores tf.device for mirrored variables


def resolve_runtime(config, placed_towers, data_parallel):
    """The precision and XLA setting this run uses on this machine, and why.

    Returns a dict for the run files: mixed_precision, jit_compile, their
    reasons, the hardware that decided them, and `warning` (a line to print
    about an explicit choice the hardware only emulates, or None).
    """
    found = hardware.detected()
    precision, precision_why, warning = hardware.resolve_precision(config.mixed_precision, found)
    jit, jit_why = hardware.resolve_jit(config.jit_compile, found, precision, placed_towers,
                                        data_parallel)
    if jit and found.accelerator is None:
        hardware.configure_xla_cpu()
    return {"mixed_precision": precision, "mixed_precision_reason": precision_why,
            "jit_compile": jit, "jit_compile_reason": jit_why, "warning": warning,
            "hardware": found.as_dict()}


def runtime_lines(runtime):
    """What the run says about its precision and XLA (and a warning, if any)."""
    lines = [runtime["warning"]] if runtime["warning"] else []
    return lines + [f"precision {runtime['mixed_precision']} ({runtime['mixed_precision_reason']}"
                    f"); XLA {'on' if runtime['jit_compile'] else 'off'} "
                    f"({runtime['jit_compile_reason']})"]


def resolve_inference(mixed_precision=hardware.AUTO, jit_compile=hardware.AUTO):
    """The precision and XLA setting inference uses on this machine (eval, predict, retrieve,
    figures), and why: a dict like `resolve_runtime`'s."""
    found = hardware.detected()
    precision, precision_why, warning = hardware.resolve_precision(mixed_precision, found)
    jit, jit_why = hardware.resolve_jit(jit_compile, found, precision, inference=True)
    if jit and found.accelerator is None:
        hardware.configure_xla_cpu()
    return {"mixed_precision": precision, "mixed_precision_reason": precision_why,
            "jit_compile": jit, "jit_compile_reason": jit_why, "warning": warning}


@contextlib.contextmanager
def dtype_policy(precision):
    """Models built inside compute in `precision` (None: the policy as it is); restored after."""
    if precision is None:
        yield
        return
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(hardware.KERAS_POLICIES[precision])
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def set_up(config, precision):
    """Determinism, the seed and the Keras dtype policy of a run computing in `precision`."""
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(hardware.KERAS_POLICIES[precision])


@dataclasses.dataclass
class Resolved:
    """A run's choices on this machine.

    Attributes:
      config: The recipe's settings for the chosen precision (`for_precision`).
      runtime: What run_config.json records: precision, XLA, their reasons,
        the hardware, the per-precision settings used.
      devices: The towers' devices for `build_alexnet` (None: unplaced).
      chief: Whether this process writes the run's files.
      task: This process's tag (LOCAL_TASK, or e.g. "worker_1").
    """
    config: object
    runtime: dict
    devices: object
    chief: bool
    task: str

    @property
    def precision(self):
        return self.runtime["mixed_precision"]


def resolve(recipe, strategy):
    """Resolves (and sets up) where and in what precision the run of `recipe` computes."""
    devices = tower_devices(recipe, strategy)
    chief, task = task_of(strategy)
    runtime = resolve_runtime(recipe, any(devices or ()), not is_default_strategy(strategy))
    config = recipe.for_precision(runtime["mixed_precision"])
    runtime["settings"] = {name: getattr(config, name) for name in PER_PRECISION}
    runtime["epochs"] = config.epochs
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise errors.ConfigError(f"--batch_size={config.batch_size} is not divisible by the "
                                 f"{replicas} replicas; use a multiple of {replicas}")
    set_up(config, runtime["mixed_precision"])
    return Resolved(config, runtime, devices, chief, task)

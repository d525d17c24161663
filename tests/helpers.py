"""Helpers shared by the test files that run the CLIs as a user does."""

import contextlib
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# A line of TensorFlow's (or absl's C++) log: "I0000 00:00:... file.cc:12] ...", and the like.
NATIVE_LOG = r"^([IWEF]\d{4} \d\d:\d\d:|WARNING: All log messages before absl|To enable the follow)"


def cli(module, *args, timeout=300, cwd=REPO):
    """Runs `python -m alexnet_tf.cli.<module> args` from the repository root, as a user does
    (no TF_CPP_MIN_LOG_LEVEL: the commands keep TensorFlow quiet themselves)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", f"alexnet_tf.cli.{module}", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def free_ports(n):
    """`n` distinct TCP ports free on 127.0.0.1 (all held open together while picked)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def train_tiny_run(model_dir, data_dir):
    """`model_dir` trained for 4 steps on the tiny built-in dataset in float32 (two towers,
    unplaced): the run the export tests export."""
    from alexnet_tf.training import train
    from alexnet_tf.config import ModelConfig, TrainConfig
    config = TrainConfig(model_dir=model_dir, dataset="alexnet_shapes/tiny", data_dir=data_dir,
                         batch_size=8, max_steps=4, checkpoint_steps=4, seed=3,
                         input_scale="std", learning_rate=0.002,
                         mixed_precision="float32", jit_compile="false",
                         model=ModelConfig(devices="none", kernel_init="he", bias_init="zeros"))
    train.train(config, log=lambda line: None)
    return model_dir

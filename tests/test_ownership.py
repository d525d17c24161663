"""A run directory has one writer and one recipe: the lock, the guard on resumed settings, history.

Two trainers are started as users start them (two processes of alexnet-train on
one --model_dir); resumes with changed settings go through `train.train`.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from alexnet_tf.config import ModelConfig, TrainConfig
from alexnet_tf.training import ownership, train
from helpers import REPO

TINY = "alexnet_shapes/tiny"


def tiny_config(model_dir, data_dir, **overrides):
    settings = dict(model_dir=str(model_dir), dataset=TINY, data_dir=data_dir, batch_size=8,
                    epochs=1, max_steps=4, log_steps=2, checkpoint_steps=2, seed=1,
                    input_scale="std", learning_rate=0.001, mixed_precision="float32",
                    jit_compile="false",
                    model=ModelConfig(devices="none", kernel_init="he", bias_init="zeros",
                                      dropout_rate=0.0))
    settings.update(overrides)
    return TrainConfig(**settings)


def start_trainer(model_dir, data_dir, *more):
    args = [sys.executable, "-m", "alexnet_tf.cli.train", f"--model_dir={model_dir}",
            f"--dataset={TINY}", f"--data_dir={data_dir}", "--batch_size=8", "--epochs=6",
            "--log_steps=1", "--checkpoint_steps=3", "--input_scale=std", "--kernel_init=he",
            "--bias_init=zeros", "--learning_rate=0.001", "--mixed_precision=float32",
            "--jit_compile=false", "--towers_on=none", *more]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def wait_for(condition, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def event_files(model_dir):
    return sorted(glob.glob(os.path.join(model_dir, "*", "events.*")))


def test_one_writer_a_second_trainer_is_refused_and_a_killed_ones_lock_taken_over(
        tiny_data_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    first = start_trainer(model_dir, tiny_data_dir)
    try:
        wait_for(lambda: glob.glob(os.path.join(model_dir, "ckpt-3.index")), 300,
                 "the first trainer's first checkpoint")
        events = event_files(model_dir)
        started = time.time()
        second = start_trainer(model_dir, tiny_data_dir)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 1 and time.time() - started < 60
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("alexnet-train: error: "), err
        assert f"pid {first.pid}" in lines[0] and "is being trained by" in lines[0]
        assert event_files(model_dir) == events                 # the second wrote nothing
        time.sleep(2)
        assert first.poll() is None                             # the first goes on training
    finally:
        first.send_signal(signal.SIGKILL)                       # then dies without cleaning up
        first.wait()
    assert os.path.exists(os.path.join(model_dir, ownership.LOCK))
    again = start_trainer(model_dir, tiny_data_dir, "--max_steps=8")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert f"Taking over the lock of {model_dir} from pid {first.pid}" in out
    assert "Resuming from step" in out and "training to step 8" in out
    history = [json.loads(line) for line in open(os.path.join(model_dir, ownership.HISTORY))]
    assert [h["pid"] for h in history] == [first.pid, again.pid]
    assert not os.path.exists(os.path.join(model_dir, ownership.LOCK))


def test_a_resume_keeps_the_recipe_unless_a_change_is_allowed(tiny_data_dir, tmp_path):
    model_dir = tmp_path / "run"
    log = []
    train.train(tiny_config(model_dir, tiny_data_dir), log=log.append)
    before = {p: open(p, "rb").read() for p in glob.glob(str(model_dir / "*"))
              if os.path.isfile(p)}
    events = event_files(str(model_dir))
    # Another batch size and no LRN: refused, one line per setting, nothing written.
    changed = tiny_config(model_dir, tiny_data_dir, batch_size=16, max_steps=6,
                          model=ModelConfig(devices="none", kernel_init="he", bias_init="zeros",
                                            dropout_rate=0.0, lrn=False))
    with pytest.raises(ownership.RecipeChangedError) as error:
        train.train(changed, log=log.append)
    message = str(error.value)
    assert "--batch_size: 8 in the run, 16 now" in message.splitlines()
    assert "--lrn: True in the run, False now" in message.splitlines()
    assert "--allow_changes=batch_size,lrn" in message
    after = {p: open(p, "rb").read() for p in glob.glob(str(model_dir / "*"))
             if os.path.isfile(p)}
    assert after == before and event_files(str(model_dir)) == events
    assert not os.path.exists(model_dir / ownership.LOCK)
    # A longer run and louder logging need no flag; a named change is accepted and recorded.
    train.train(tiny_config(model_dir, tiny_data_dir, max_steps=6, log_steps=1,
                            learning_rate=0.002, allow_changes=("learning_rate",)),
                log=log.append)
    assert any(line.startswith("Resuming from step 4") for line in log)
    assert "Accepted change (--allow_changes): --learning_rate: 0.001 in the run, 0.002 now" \
        in log
    history = [json.loads(line) for line in open(model_dir / ownership.HISTORY)]
    assert [h["step"] for h in history] == [0, 4]
    assert history[1]["accepted_changes"] == ["--learning_rate: 0.001 in the run, 0.002 now"]
    assert history[0]["recipe"]["learning_rate"] == 0.001            # the original recipe kept
    # The next resume compares with the last start's recipe (0.002 now). An allowed batch size
    # change moves the epochs' boundaries (step 6 of 10-step epochs; now 5-step ones): the run
    # goes on instead of waiting for an epoch that yields nothing.
    log.clear()
    train.train(tiny_config(model_dir, tiny_data_dir, max_steps=9, learning_rate=0.002,
                            batch_size=16, epochs=10, allow_changes=("batch_size",)),
                log=log.append)
    assert any("step 9/9" in line for line in log), log
    assert ownership.summary(str(model_dir))["starts"] == 3


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

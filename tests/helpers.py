"""Helpers shared by the test files that run the CLIs as a user does."""

import contextlib
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# A line of TensorFlow's (or absl's C++) log: "I0000 00:00:... file.cc:12] ...", and the like.
NATIVE_LOG = r"^([IWEF]\d{4} \d\d:\d\d:|WARNING: All log messages before absl|To enable the follow)"


# Left out of the commands' environment: the commands keep TensorFlow quiet themselves, and
# pytest names the running test in PYTEST_CURRENT_TEST, which is no user's setting (it changes
# with every test, and `forked` restarts its forking process when the environment changes).
NOT_FOR_COMMANDS = ("TF_CPP_MIN_LOG_LEVEL", "PYTEST_CURRENT_TEST")


# Read by the package when a command runs, never at import (`hardware.detected()`): a forked
# command gets their values with its request, so the `cpu_class` fixture's changes need no new
# forking process (7-12 s each).
AT_RUN_TIME = ("ALEXNET_TF_CPU_CLASS",)


def command_env():
    """The environment the commands run in: the suite's, without NOT_FOR_COMMANDS."""
    return {k: v for k, v in os.environ.items() if k not in NOT_FOR_COMMANDS}


def _forker_env_now():
    """command_env() as the forking process must have started with it: AT_RUN_TIME aside."""
    return {k: v for k, v in command_env().items() if k not in AT_RUN_TIME}


def command_name(module):
    """alexnet_tf.cli.<module>'s console script (setup.py): 'import_caffe' -> 'alexnet-import'."""
    return "alexnet-" + {"import_caffe": "import", "evaluate": "eval"}.get(module, module)


def cli(module, *args, timeout=300, cwd=REPO, fresh=False):
    """Runs `python -m alexnet_tf.cli.<module> args` from the repository root, as a user does:
    in a process forked from one that imported the package once (`forked`), or with
    `fresh=True` in a new interpreter, for the tests about the process itself."""
    if not fresh:
        return forked(module, *args, timeout=timeout, cwd=cwd)
    return subprocess.run([sys.executable, "-m", f"alexnet_tf.cli.{module}", *args], cwd=cwd,
                          env=command_env(), capture_output=True, text=True, timeout=timeout)


_forker = None
_forker_env = None


def refusal(module, *args, timeout=120, cwd=REPO):
    """`cli(module, *args)` for a command line the command refuses before it does any work (a
    usage error, a bad path or file)."""
    return forked(module, *args, timeout=timeout, cwd=cwd)


def forked(module, *args, timeout=300, cwd=REPO):
    """The command run in a process forked from one that imported the package once
    (tests/cli_forker.py), which spares each run the 4-13 s of importing TensorFlow. The same
    `run()`, argv, stdout and stderr as the console script. The forking process is started
    again when the environment the command would get has changed since it started, except
    for AT_RUN_TIME's variables, which the forked process sets."""
    import json
    import selectors
    import tempfile
    global _forker, _forker_env
    if _forker is not None and (_forker.poll() is not None or _forker_env != _forker_env_now()):
        close_forker()
    if _forker is None:
        _forker_env = _forker_env_now()
        _forker = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "cli_forker.py")],
                                   cwd=REPO, env=_forker_env, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    with tempfile.TemporaryDirectory() as folder:
        out, err = os.path.join(folder, "out"), os.path.join(folder, "err")
        env = {k: os.environ.get(k) for k in AT_RUN_TIME}
        _forker.stdin.write(json.dumps(dict(tool=module, args=list(args), cwd=str(cwd), out=out,
                                            err=err, env=env)) + "\n")
        _forker.stdin.flush()
        with selectors.DefaultSelector() as selector:
            selector.register(_forker.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                _forker.kill()
                raise subprocess.TimeoutExpired(f"alexnet_tf.cli.{module}", timeout)
        line = _forker.stdout.readline()
        if not line:
            raise RuntimeError(f"tests/cli_forker.py ended (exit {_forker.wait()})")
        with open(out) as o, open(err) as e:
            return subprocess.CompletedProcess([module, *args], json.loads(line)["returncode"],
                                               o.read(), e.read())


def close_forker():
    """Ends `forked`'s forking process (it holds the package's imports, about 0.7 GB)."""
    global _forker
    if _forker is not None:
        _forker.stdin.close()
        try:
            _forker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _forker.kill()
            _forker.wait()
        _forker.stdout.close()
        _forker = None


def free_ports(n):
    """`n` distinct TCP ports free on 127.0.0.1 (all held open together while picked)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def made_once(name, make):
    """The folder `name` in the session's temporary folder (conftest.py), made by `make(folder)`
    in whichever of the session's processes asks first, under a lock, and shared by the rest
    of the session (both workers): they wait for it rather than make their own."""
    import fcntl
    import shutil
    session = os.environ.get("ALEXNET_TF_TEST_TMPDIR")
    if not session:
        raise RuntimeError("ALEXNET_TF_TEST_TMPDIR is unset: tests/conftest.py sets it")
    folder = os.path.join(session, name)
    with open(folder + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)        # the kernel lets go if its holder dies
        if not os.path.exists(folder + ".done"):
            shutil.rmtree(folder, ignore_errors=True)       # what a holder that died left
            make(folder)
            open(folder + ".done", "w").close()
    return folder


def tiny_run(model_dir, data_dir):
    """`model_dir`: a copy of the session's `train_tiny_run` (trained once for the whole session;
    the copy is the test's to change)."""
    import hashlib
    import shutil
    key = hashlib.sha1(os.path.abspath(data_dir).encode()).hexdigest()[:8]
    shared = made_once(f"tiny-run-{key}", lambda folder: train_tiny_run(folder, data_dir))
    shutil.copytree(shared, model_dir, dirs_exist_ok=True)
    return model_dir


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


def assert_equal(actual, expected, name=""):
    """np.testing.assert_array_equal, quick when the arrays are equal (it takes a second on fc6's
    37.7M weights): numpy's own check, with its message, runs only on a difference."""
    import numpy as np
    # A scalar stands for an array of its value, as in assert_array_equal.
    if not (np.ndim(expected) == 0 or np.shape(actual) == np.shape(expected)) or not np.all(
            np.asarray(actual) == expected):
        np.testing.assert_array_equal(actual, expected, err_msg=name)


def assert_close(actual, expected, rtol, atol, name=""):
    """np.testing.assert_allclose, quick when the arrays are close (it takes seconds on fc6's
    37.7M weights): numpy's own check, with its message, runs only when they are not."""
    import numpy as np
    if not (np.shape(actual) == np.shape(expected) and _close(actual, expected, rtol, atol)):
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=name)


def _close(actual, expected, rtol, atol, chunk=1 << 18):
    """|actual - expected| <= atol + rtol |expected| everywhere, a chunk at a time (fc6's whole
    arrays in float64 made five 300 MB temporaries; chunks stay in the cache)."""
    import numpy as np
    if np.ndim(rtol) or np.ndim(atol):
        return bool(np.all(np.abs(actual - expected) <= atol + rtol * np.abs(expected)))
    a, e = np.ravel(actual), np.ravel(expected)
    return all(np.all(np.abs(a[i:i + chunk] - e[i:i + chunk]) <= atol + rtol * np.abs(
        e[i:i + chunk])) for i in range(0, a.size, chunk))

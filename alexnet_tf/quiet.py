"""The commands' native output off: what C++ libraries write to file descriptor 2 goes nowhere.

TensorFlow's C++ log (its start-up lines, "Local rendezvous is aborting ...",
cuInit on a machine without a GPU), libjpeg's warnings and the like are
written to fd 2 directly, before and beside absl's logging, so no log level
removes them all. In an alexnet-* command fd 2 points at /dev/null, while
Python's `sys.stderr` (the commands' messages, warnings, absl logging and
tracebacks) writes to the terminal through a copy of it. `ALEXNET_TF_VERBOSE=1`
leaves fd 2 alone. Child processes the commands start are told through the
environment (`ALEXNET_TF_QUIET=1`) and do the same. Imports nothing heavy: it
runs before TensorFlow loads.
"""

import contextlib
import os
import sys

QUIET_ENV, VERBOSE_ENV = "ALEXNET_TF_QUIET", "ALEXNET_TF_VERBOSE"
_terminal = None        # a copy of the original fd 2, once silenced


def is_command():
    """Whether this process is one of the alexnet-* commands (a console script or `-m`)."""
    if os.path.basename(sys.argv[0] if sys.argv else "").startswith("alexnet-"):
        return True
    argv = getattr(sys, "orig_argv", [])
    return any(a == "-m" and b.startswith("alexnet_tf.cli") for a, b in zip(argv, argv[1:]))


def wanted():
    """Whether this process silences its native output (a command, or a command's child)."""
    if os.environ.get(VERBOSE_ENV) == "1":
        return False
    return is_command() or os.environ.get(QUIET_ENV) == "1"


def _point_fd2_at_null():
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)


def silence_native_stderr():
    """fd 2 -> /dev/null; `sys.stderr` keeps writing to where fd 2 pointed (idempotent)."""
    global _terminal
    if _terminal is not None:
        return
    sys.stderr.flush()
    _terminal = os.dup(2)
    _point_fd2_at_null()
    sys.stderr = open(os.dup(_terminal), "w", buffering=1, errors="backslashreplace")
    os.environ[QUIET_ENV] = "1"
    if "absl.logging" in sys.modules:            # a handler made before now holds the old stream
        sys.modules["absl.logging"].get_absl_handler().python_handler.stream = sys.stderr


@contextlib.contextmanager
def terminal_stderr():
    """fd 2 on the terminal meanwhile, so that a child process started now inherits it."""
    if _terminal is None:
        yield
        return
    sys.stderr.flush()
    os.dup2(_terminal, 2)
    try:
        yield
    finally:
        _point_fd2_at_null()

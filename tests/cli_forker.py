"""Runs alexnet-* commands in processes forked from this one, which imported TensorFlow and the
package once (`helpers.forked`). A command spends 4-13 s importing them on two busy cores;
forked, it starts at once.

Protocol, one JSON object a line: in {"tool", "args", "cwd", "out", "err", "env"}; out
{"returncode"}. "env" holds the variables the package reads when a command runs
(`helpers.AT_RUN_TIME`; null: unset), set in the child before the command. Each child is what
the console script `alexnet-<tool>` runs: argv[0] the command's name, the tool's module as
`__main__` (as `python -m` has it), its `run()`, fd 1 to `out`, and (as in every alexnet-*
command) Python's stderr to `err` while native libraries' fd 2 goes nowhere (`quiet`). Started
by `helpers.py`; ends when its input closes, and a child ends with it (a timed-out command is
killed with its forker).
"""

import atexit
import ctypes
import importlib
import json
import os
import pkgutil
import signal
import sys

os.environ["ALEXNET_TF_QUIET"] = "1"       # as a command's process: native fd 2 silenced

import alexnet_tf  # noqa: E402
from alexnet_tf import hardware  # noqa: E402
from helpers import command_name  # noqa: E402  (this script's folder is on the path)

# Everything the commands import but the commands themselves (each defines its own flags).
for module in pkgutil.walk_packages(alexnet_tf.__path__, "alexnet_tf."):
    if not module.name.startswith("alexnet_tf.cli."):
        importlib.import_module(module.name)
importlib.import_module("alexnet_tf.cli")


def child(request):
    """In the forked process: the command, then its exit status (never returns)."""
    code = 1
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)    # PR_SET_PDEATHSIG: ends with the forker
        os.chdir(request["cwd"])
        for name, value in request["env"].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        hardware.detected.cache_clear()      # what ALEXNET_TF_CPU_CLASS names, read again
        out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(err, sys.stderr.fileno())
        sys.argv = [command_name(request["tool"]), *request["args"]]
        module = importlib.import_module(f"alexnet_tf.cli.{request['tool']}")
        sys.modules["__main__"] = module            # as `python -m` (absl's usage reads it)
        try:
            module.run()
            code = 0
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                code = exit_.code or 0
            else:
                print(exit_.code, file=sys.stderr)
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()     # as the command's own exit would (autograph's temp files)
        except BaseException:
            pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve():
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(request)
        _, status = os.waitpid(pid, 0)
        reply = {"returncode": os.waitstatus_to_exitcode(status)}
        real_stdout.write(json.dumps(reply) + "\n")
        real_stdout.flush()


if __name__ == "__main__":
    real_stdout = os.fdopen(os.dup(1), "w")     # the replies; children's fd 1 is their own
    serve()

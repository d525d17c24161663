"""A run directory has one writer and one recipe: its lock, the guard on resumed settings, its history.

* `hold(path)`: the trainer's lock, `DIR/.lock` (host, pid, since), created
  with O_EXCL and its modification time kept fresh by a heartbeat thread. A
  second trainer is refused in one line naming the holder. A lock whose holder
  is gone (its pid no longer runs on this host, or its heartbeat is older than
  `STALE_SECONDS` on another host) is taken over, with one line saying so.
  Read-only tools never take it.
* `check_recipe(run_dir, recipe)`: the settings that make the run what it is,
  compared with those of its last start; a difference is refused, one line per
  setting, unless named in `--allow_changes`.
* `record_start(...)`: one JSON line per start or resume in `DIR/history.jsonl`
  (time, host, pid, command line, version, commit, start step, recipe, accepted
  changes); `summary(path)` condenses it for the tools that report on a run.

Example:

    with hold("runs/a", log=print):
        accepted = check_recipe(RunDir("runs/a"), recipe)
        ...
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

from alexnet_tf import config as config_lib, errors, files
from alexnet_tf.training.rundir import RUN_CONFIG
from alexnet_tf.version import __version__

LOCK = ".lock"
HISTORY = "history.jsonl"
HEARTBEAT_SECONDS = 30
STALE_SECONDS = 600       # another host's lock without a heartbeat this long is abandoned


class RunInUseError(errors.UserError):
    """Another trainer writes this run directory; the message is one line."""


class RecipeChangedError(errors.UserError):
    """A resume whose settings change what the run is; one line per setting."""


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(path):
    """(the lock's JSON, seconds since its heartbeat), or (None, None) if there is none."""
    try:
        with open(path) as f:
            owner = json.load(f)
        return owner, time.time() - os.path.getmtime(path)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError):
        return {}, time.time() - os.path.getmtime(path) if os.path.exists(path) else None


def _abandoned(owner, age):
    if not owner:                                 # unreadable: judged by its heartbeat alone
        return age is not None and age > STALE_SECONDS
    if owner.get("host") == socket.gethostname():
        return not _alive(int(owner.get("pid", -1)))
    return age > STALE_SECONDS


def _describe(owner):
    return (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')} since "
            f"{owner.get('since', '?')}")


@contextlib.contextmanager
def hold(path, log=print):
    """Holds `path`'s writer lock for the block (created if the folder is new)."""
    os.makedirs(path, exist_ok=True)
    lock = os.path.join(path, LOCK)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": _now()}
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner, age = _holder(lock)
            if owner is None:
                continue                          # released meanwhile: try again
            if not _abandoned(owner, age):
                raise RunInUseError(
                    f"{path} is being trained by {_describe(owner)} (its lock {lock}); wait "
                    "for it to finish or stop it, or train into another --model_dir") from None
            holder = _describe(owner) if owner else "a process that left it unreadable"
            log(f"Taking over the lock of {path} from {holder}, which is no longer running")
            os.remove(lock)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):
                os.utime(lock)

    thread = threading.Thread(target=beat, name="alexnet_tf-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield me
    finally:
        stop.set()
        owner, _ = _holder(lock)
        if owner and (owner.get("host"), owner.get("pid")) == (me["host"], me["pid"]):
            os.remove(lock)


# --- The recipe --------------------------------------------------------------------------------


def _last_recipe(run_dir):
    """The recipe (a TrainConfig) of the run's last start, or None for a new run."""
    for line in reversed(_history_lines(run_dir.path)):
        if "recipe" in line:
            return config_lib.TrainConfig.from_dict(line["recipe"])
    if os.path.exists(os.path.join(run_dir.path, RUN_CONFIG)):
        return run_dir.read().config               # a run started before the history existed
    return None


def check_recipe(run_dir, recipe):
    """The settings `recipe` changes that its `allow_changes` accepts; refuses any other change.

    Returns a list of "--flag: old -> new" strings (empty for a new run or an unchanged one).
    """
    before = _last_recipe(run_dir)
    if before is None:
        return []
    differences = config_lib.recipe_differences(before, recipe)
    allowed = set(recipe.allow_changes)
    refused = [line for name, line in differences if name not in allowed]
    if refused:
        raise RecipeChangedError(
            f"{run_dir.path} was trained with other settings; resuming it would change what "
            "the run is (nothing was written). Train into a new --model_dir, or accept the "
            "change with --allow_changes=" + ",".join(n for n, _ in differences
                                                        if n not in allowed) + ":\n"
            + "\n".join(refused))
    return [line for _, line in differences]


# --- The history -------------------------------------------------------------------------------


def _history_lines(path):
    try:
        with open(os.path.join(path, HISTORY)) as f:
            lines = []
            for text in f:
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(text))
            return lines
    except OSError:
        return []


def _commit():
    """The git commit of the package's checkout, if it is one (else None)."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        done = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def record_start(run_dir, recipe, step, accepted):
    """Appends this start's line to DIR/history.jsonl (one write of one line)."""
    line = {"time": _now(), "host": socket.gethostname(), "pid": os.getpid(),
            "command": sys.argv, "version": __version__, "commit": _commit(),
            "step": int(step), "accepted_changes": list(accepted), "recipe": recipe.to_dict()}
    data = (json.dumps(line, default=list) + "\n").encode()
    path = os.path.join(run_dir.path, HISTORY)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666 & ~files.current_umask())
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as error:
        if errors.is_disk_full(error):
            raise files.disk_full(path, len(data)) from None
        raise


def summary(path):
    """The history condensed: starts, the first and last start, every accepted change."""
    lines = _history_lines(path)
    if not lines:
        return {"starts": 0}
    return {"starts": len(lines), "first_start": lines[0].get("time"),
            "last_start": lines[-1].get("time"), "last_commit": lines[-1].get("commit"),
            "accepted_changes": [change for line in lines
                                 for change in line.get("accepted_changes", [])]}

"""File utilities that have nothing to do with data or models: atomic writes and the umask.

Everything the project writes for the user (run files, statistics, figures,
indexes, JSON results, exports) is written through a temporary name in the
destination's folder and renamed into place, so a crash never leaves a
half-written file behind.
"""

import json
import os
import tempfile


def current_umask():
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, data):
    """Writes bytes to `path` through a temporary file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())   # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path, value):
    """Writes `value` as indented JSON, atomically (tuples become lists)."""
    atomic_write(path, json.dumps(value, indent=2, default=list).encode())


def read_json(path):
    """The JSON document at `path`, or None if it is missing or not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

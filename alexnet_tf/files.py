"""File utilities that have nothing to do with data or models: atomic writes and the umask.

Everything the project writes for the user (run files, statistics, figures,
indexes, JSON results, exports) is written through a temporary name in the
destination's folder and renamed into place, so a crash never leaves a
half-written file behind.
"""

import json
import os
import shutil
import tempfile

from alexnet_tf import errors


def current_umask():
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


TEMPORARY_PREFIX = ".tmp-"


def free_bytes(path):
    """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def atomic_write(path, data):
    """Writes bytes to `path` through a temporary file in the same folder and a rename.

    A full disk raises `errors.DiskFullError` (one line: the path and the space
    needed); the temporary file is removed and an existing `path` is untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX + os.path.basename(path))
    except OSError as error:
        if errors.is_disk_full(error):
            raise disk_full(path, len(data)) from None
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())   # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(error, OSError) and errors.is_disk_full(error):
            raise disk_full(path, len(data)) from None
        raise


def disk_full(path, needed, advice="free space and run again", kept=""):
    """The one-line `DiskFullError` for writing `needed` bytes at `path`."""
    return errors.DiskFullError(
        f"no space left on device writing {path} ({errors.megabytes(needed)} needed, "
        f"{errors.megabytes(free_bytes(path))} free): {advice}{kept}")


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

"""File utilities that have nothing to do with data or models: atomic writes and the umask.

Everything the project writes for the user (run files, statistics, figures,
indexes, JSON results, exports) is written through a temporary name in the
destination's folder and renamed into place, so a crash never leaves a
half-written file behind.
"""

import contextlib
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


def shown_path(path):
    """`path` as a message shows it: relative to the working directory when inside it."""
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative


def missing_folders(path):
    """`path` and the folders above it that do not exist yet, deepest first."""
    missing, path = [], os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def remove_if_empty(folders):
    """Removes each of `folders` (deepest first) that exists and is empty: what a refused start
    made and left unused."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:           # not empty, or gone: keep going up only through empty ones
            break


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


def require_new_directory(path, flag="--model_dir"):
    """One-line UserError unless `path` is absent or an empty folder (what a new run may use)."""
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise errors.UserError(f"{path} exists and is not empty; pass a new {flag} (this never "
                               "writes over what is there)")


def disk_full(path, needed, advice="free space and run again", kept=""):
    """The one-line `DiskFullError` for writing `needed` bytes at `path`."""
    return errors.DiskFullError(
        f"no space left on device writing {path} ({errors.megabytes(needed)} needed, "
        f"{errors.megabytes(free_bytes(path))} free): {advice}{kept}")


def unused_path(path):
    """`path` if nothing is there, else the first free `stem-2.ext`, `stem-3.ext`, ...: a default
    output name that never overwrites an earlier output."""
    stem, ext = os.path.splitext(path)
    candidate, n = path, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{stem}-{n}{ext}"
    return candidate


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


@contextlib.contextmanager
def staged_directory(final, needed_bytes, advice="free space and run again"):
    """Yields a hidden temporary folder beside `final`, renamed to `final` when the block succeeds.

    When the block fails the folder is removed, so `final` is either complete
    or absent. `final` must not exist (or be an empty folder). A full disk
    raises a one-line `errors.DiskFullError` saying nothing was written
    (`needed_bytes`: a number, or a function giving it).

    Example:

    >>> with staged_directory("runs/imported", 250e6) as folder:
    ...     write_everything_into(folder)
    """
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}{os.path.basename(final)}-", dir=parent)
    try:
        yield staging
        os.chmod(staging, 0o777 & ~current_umask())
        try:
            os.rename(staging, final)
        except OSError as error:
            if errors.is_disk_full(error):
                raise
            raise errors.UserError(f"{final} appeared while it was being written (another "
                                   "process?); nothing was replaced, run again") from None
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if errors.is_disk_full(error):
            needed = needed_bytes() if callable(needed_bytes) else needed_bytes
            raise disk_full(final, needed, advice, "; nothing was written") from None
        raise

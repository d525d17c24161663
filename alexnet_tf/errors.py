"""The errors a user can cause, as one family: the CLIs print their message as one line.

Each module that finds such a problem owns its error type (`sources.DataError`,
`rundir.RunDirError`, `export.ExportError`, ...), a subclass of `UserError`;
anything else that goes wrong is a bug and keeps its traceback.
"""

import errno


class UserError(ValueError):
    """A problem with what the user asked for or gave; the message is one line with the fix."""


class ConfigError(UserError):
    """Settings that cannot work (together, or on this machine)."""


class DiskFullError(UserError):
    """Not enough space to write something; what was complete before is kept."""


def first_line(error, limit=160):
    """An exception's message as one line (its first, cut at `limit`), or its type's name."""
    text = str(getattr(error, "message", None) or error or "").strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def megabytes(size):
    """A byte count as people read it in a message ("455 MB", "0.2 MB")."""
    return f"{size / 1e6:.0f} MB" if size >= 1e7 else f"{size / 1e6:.1f} MB"


def is_disk_full(error):
    """True for the errors a full disk raises: OSError ENOSPC / EDQUOT, or TF's file system's."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    message = str(getattr(error, "message", error))
    return "No space left on device" in message or "Disk quota exceeded" in message

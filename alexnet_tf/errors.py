"""The errors a user can cause, as one family: the CLIs print their message as one line.

Each module that finds such a problem owns its error type (`sources.DataError`,
`rundir.RunDirError`, `export.ExportError`, ...), a subclass of `UserError`;
anything else that goes wrong is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A problem with what the user asked for or gave; the message is one line with the fix."""


class ConfigError(UserError):
    """Settings that cannot work (together, or on this machine)."""

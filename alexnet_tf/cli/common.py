"""What every CLI main does the same way: one voice for errors, help, quiet libraries."""

import logging as std_logging
import os
import re
import sys
import warnings

from absl import app, flags, logging

from alexnet_tf import errors, quiet
from alexnet_tf.config import MIXED_PRECISIONS
from alexnet_tf.data import preprocessing
from alexnet_tf.training import runtime

USAGE_ERROR, FAILURE = 2, 1          # exit statuses: the command line is wrong; the job failed
HELP_FLAGS = ("--help", "--helpshort", "--helpfull", "-?", "-help", "-helpshort", "-helpfull")


def refuse(tool, message, status):
    """Prints `alexnet-<tool>: error: <message>` (one line) and exits with `status`."""
    line = " ".join(str(message).split())
    print(f"alexnet-{tool}: error: {line}", file=sys.stderr, flush=True)
    sys.exit(status)


def warn(tool, message):
    """Prints `alexnet-<tool>: warning: <message>` (one line); the job goes on."""
    print(f"alexnet-{tool}: warning: {' '.join(str(message).split())}", file=sys.stderr,
          flush=True)


def flag_error_line(tool, error):
    """absl's flag error as one line that names the flag and the fix."""
    text = " ".join(str(error).split())
    if isinstance(error, flags.UnrecognizedFlagError):
        name = getattr(error, "flagname", None) or text
        suggestions = re.search(r"Did you mean: (.*?)\s*\??$", text)
        hint = f"did you mean --{suggestions.group(1)}? " if suggestions else ""
        return f"unknown flag --{name} ({hint}alexnet-{tool} --helpshort lists its flags)"
    if isinstance(error, flags.CantOpenFlagFileError):
        opened = re.search(r"\[Errno \d+\] (.*?): '(.*)'$", text)
        return (f"--flagfile={opened.group(2)} cannot be opened ({opened.group(1)})" if opened
                else text.replace("ERROR:: ", ""))
    required = re.search(r"Flag --(\w+) must have a value other than None", text)
    if required:
        return f"--{required.group(1)} is required (give --{required.group(1)}=...)"
    match = re.match(r"flag --(\w+)=(.*?): (.*)$", text)
    if match:
        name, value, reason = match.groups()
        reason = reason.rstrip(".")
        if reason.startswith(f"--{name}="):              # the validator named the value itself
            return reason
        if reason.startswith(f"--{name} "):
            reason = reason[len(name) + 3:]
        return f"--{name}={value}: {reason}"
    return text


# What a path-shaped flag names (`path_flags`): a directory written into (made if missing), an
# existing directory, a file written (its folder made if missing), an existing file, either.
OUT_DIR, IN_DIR, OUT_FILE, IN_FILE, IN_PATH = "out_dir", "in_dir", "out_file", "in_file", "in_path"


def path_problem(path, kind):
    """Why `path` cannot be a `kind` path (a short phrase), or None."""
    if kind == OUT_FILE and path == "-":
        return None
    if os.path.exists(path):
        if kind in (OUT_DIR, IN_DIR) and not os.path.isdir(path):
            return "is a file, not a directory (give a directory)"
        if kind in (OUT_FILE, IN_FILE) and os.path.isdir(path):
            return "is a directory, not a file (give a file's path)"
        if kind in (IN_DIR, IN_FILE, IN_PATH) and not os.access(path, os.R_OK):
            return "cannot be read (no permission)"
        if kind == OUT_DIR and not os.access(path, os.W_OK | os.X_OK):
            return "cannot be written into (no permission)"
        if kind == OUT_FILE and not os.access(path, os.W_OK):
            return "cannot be written (no permission)"
        return None
    if kind in (IN_DIR, IN_FILE, IN_PATH):
        return "does not exist"
    # To be made: the nearest existing folder above it must be a writable directory.
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot be made: {parent} is a file, not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be made: no permission to write in {parent}"
    return None


def path_flags(**kinds):
    """Checks each named path flag when the command line is parsed: given something of the wrong
    kind (a file for a directory, a directory for a file, a missing one, no permission), the tool
    refuses in one line (exit 2) before it starts. `kinds`: {flag name: OUT_DIR, IN_DIR, ...}."""
    for name, kind in kinds.items():
        def check(value, name=name, kind=kind):
            for path in (value if isinstance(value, list) else [value] if value else []):
                problem = path_problem(path, kind)
                if problem:
                    raise flags.ValidationError(f"--{name}={path} {problem}")
            return True
        flags.register_validator(name, check)


def _show_tool_flags(module):
    """--helpshort lists the tool's own flags (absl lists those of `sys.argv[0]`'s module)."""
    main = sys.modules["__main__"]
    if not getattr(main, "__doc__", None):
        main.__doc__ = module.__doc__
    for name, defined in flags.FLAGS.flags_by_module_dict().items():
        if name.startswith("alexnet_tf"):
            for flag in defined:
                flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run_tool(tool, main):
    """Runs `main(argv)` as alexnet-<tool> under absl.

    Every refusal is one line `alexnet-<tool>: error: ...`: flag values (the
    parser's and the validators'), a missing required flag and `app.UsageError`
    exit 2; `errors.UserError` from the job exits 1. --help / --helpshort list the
    tool's flags and --helpfull every flag, exit 0.
    """
    _show_tool_flags(sys.modules[main.__module__])
    if not sys.warnoptions and os.environ.get(quiet.VERBOSE_ENV) != "1":
        warnings.simplefilter("ignore")        # libraries' Python warnings (python -W shows them)

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            refuse(tool, flag_error_line(tool, error), USAGE_ERROR)
        except SystemExit:
            if any(arg.split("=")[0] in HELP_FLAGS for arg in argv[1:]):
                sys.exit(0)
            raise

    def guarded(argv):
        try:
            return main(argv)
        except app.UsageError as error:
            refuse(tool, error, USAGE_ERROR)
        except errors.UserError as error:
            refuse(tool, error, FAILURE)

    try:
        app.run(guarded, flags_parser=parse)
    except BrokenPipeError:              # the output piped into `head`: what it wanted was shown
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


def quiet_libraries():
    """INFO chatter from TFDS and TF off, TFDS' warnings about its own folders (on a first
    generation: "Variant folder ... has no dataset_info.json") and TF's "triggered tf.function
    retracing" (the tools trace a function per model or layer on purpose), unless the user asked
    for --verbosity."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
        logging.get_absl_handler().addFilter(_drop_library_warnings)
        std_logging.getLogger("tensorflow").addFilter(_drop_library_warnings)


def _drop_library_warnings(record):
    if record.levelno >= std_logging.ERROR:
        return True
    return (f"{os.sep}tensorflow_datasets{os.sep}" not in record.pathname and
            "triggered tf.function retracing" not in record.getMessage())


def define_max_megapixels(help_text="Image files larger than this many megapixels (read from "
                                    "their headers) are refused before decoding."):
    """The --max_megapixels flag of a CLI that reads image files (the limit is preprocessing's)."""
    flags.DEFINE_float("max_megapixels", preprocessing.MAX_MEGAPIXELS, help_text,
                       lower_bound=0.001)


def define_inference_flags(jit=True):
    """--mixed_precision (and with `jit`, --jit_compile) of a tool that runs a trained network."""
    flags.DEFINE_enum("mixed_precision", "auto", MIXED_PRECISIONS,
                      "What the network computes in (weights stay float32). auto: bfloat16 where "
                      "the hardware computes it natively (avx512_bf16/amx_bf16 CPUs, GPUs of "
                      "compute capability 8.0+, TPUs), float32 otherwise.")
    if jit:
        flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                          "XLA-compile the forward pass. auto: where it measured faster "
                          "(docs/BENCHMARKS.md).")


def inference_settings(tool):
    """`runtime.resolve_inference` of the flags (warning about an emulated precision), and the
    line a tool prints about it."""
    jit = flags.FLAGS.jit_compile if "jit_compile" in flags.FLAGS else "false"
    settings = runtime.resolve_inference(flags.FLAGS.mixed_precision, jit)
    if settings["warning"]:
        warn(tool, settings["warning"].removeprefix("warning: "))
    line = f"computing in {settings['mixed_precision']} ({settings['mixed_precision_reason']})"
    if "jit_compile" in flags.FLAGS:
        line += (f"; XLA {'on' if settings['jit_compile'] else 'off'} "
                 f"({settings['jit_compile_reason']})")
    return settings, line


def checkpoint_precision(tool, show=True):
    """What a --model_dir's network computes in (`inference_settings`; the line printed unless
    `show` is False); "float32" without --model_dir, where an export computes as exported."""
    if not flags.FLAGS.model_dir:
        return "float32"
    settings, line = inference_settings(tool)
    if show:
        print(line, flush=True)
    return settings["mixed_precision"]


def serving_error(error):
    """The one-line reason of a request the served graph refused (InvalidArgumentError)."""
    message = str(getattr(error, "message", error))
    if "megapixel limit" in message:
        return message.split("[", 1)[-1].split("]", 1)[0]
    return preprocessing.DAMAGED


def read_file(path):
    """(bytes, None), or (None, a one-line reason) when the file cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(), None
    except OSError as error:
        return None, f"cannot read it ({error.strerror})"

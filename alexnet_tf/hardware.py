"""What this machine computes fast, and the choices that follow from it.

The same code meets CPUs with native bfloat16 (AVX512_BF16, AMX), CPUs with
AVX2/FMA only (where bfloat16 is emulated and ~10x slower than float32), and
GPUs and TPUs. `--mixed_precision=auto` and `--jit_compile=auto` (the defaults)
let the hardware decide, through the small pure functions `choose_precision`,
`choose_jit` and `choose_lrn`, which take a `Hardware` description and are
tested against CPU flag sets and device lists. `detect()` builds that
description from /proc/cpuinfo and TensorFlow's device list.

`ALEXNET_TF_CPU_CLASS=avx2|avx512|avx512_bf16|amx` makes `detect()` report that
CPU class instead of this CPU's flags, so that any machine makes (and the tests
check) the choices another class makes; the work itself still runs on this CPU
(bfloat16 is emulated, and slow, where the CPU has no native bfloat16).

Every choice comes with the reason, which the run prints and records.
Measurements behind the rules: docs/BENCHMARKS.md, one table per CPU class.
"""

import ctypes
import ctypes.util
import dataclasses
import functools
import os
import platform
from typing import Tuple

from alexnet_tf import errors
from alexnet_tf.config import BFLOAT16, FLOAT16, FLOAT32, PRECISIONS  # noqa: F401  (re-exported)

# CPU flags (as /proc/cpuinfo spells them) that decide precision and compilation.
RELEVANT_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")

# The CPU classes, each with the flags a CPU of the class shows; ALEXNET_TF_CPU_CLASS names one.
CPU_CLASS_FLAGS = {
    "avx2": ("avx2", "fma"),
    "avx512": ("avx2", "fma", "avx512f"),
    "avx512_bf16": ("avx2", "fma", "avx512f", "avx512_bf16"),
    "amx": ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"),
}
CPU_CLASS_ENV = "ALEXNET_TF_CPU_CLASS"

# Resolved precisions -> Keras dtype policies (variables stay float32).
KERAS_POLICIES = {FLOAT32: "float32", BFLOAT16: "mixed_bfloat16", FLOAT16: "mixed_float16"}
AUTO = "auto"

# How far two computations of the same network on the same input may differ, by the coarser of
# their precisions: "probability", the largest |dp| of a softmax output; "features", an fc7
# vector's relative distance |a - b| / |b|. float32 against float32 differs by the order of
# operations only; bfloat16 keeps 8 significant bits, float16 11 (docs/TESTING.md). The tests
# compare by this table, and alexnet-retrieve reuses an index computed in another precision when
# its features agree within it.
AGREEMENT = {
    FLOAT32: {"probability": 1e-5, "features": 1e-5},
    FLOAT16: {"probability": 1e-2, "features": 5e-3},
    BFLOAT16: {"probability": 5e-2, "features": 3e-2},
}


def tolerance(quantity, *precisions):
    """AGREEMENT's bound on `quantity` between computations in `precisions` (the coarsest's)."""
    return max(AGREEMENT[p][quantity] for p in precisions)


@dataclasses.dataclass(frozen=True)
class Hardware:
    """What the choices depend on.

    Args:
      cpu_model: The CPU's model name (for the record).
      cpu_flags: The relevant CPU flags present (a subset of RELEVANT_CPU_FLAGS).
      gpu_compute_capabilities: (major, minor) of each visible NVIDIA GPU.
      tpu: Whether TPU devices are visible.
    """
    cpu_model: str = ""
    cpu_flags: Tuple[str, ...] = ()
    gpu_compute_capabilities: Tuple[Tuple[int, int], ...] = ()
    tpu: bool = False

    @property
    def cpu_class(self):
        """'amx', 'avx512_bf16', 'avx512', 'avx2' or 'other': the CPU class benchmarks are filed
        under."""
        flags = set(self.cpu_flags)
        if "amx_bf16" in flags:
            return "amx"
        if flags & set(NATIVE_BF16_CPU_FLAGS):
            return "avx512_bf16"
        if "avx512f" in flags:
            return "avx512"
        if "avx2" in flags:
            return "avx2"
        return "other"

    @property
    def accelerator(self):
        """'tpu', 'gpu' or None (the CPU computes)."""
        if self.tpu:
            return "tpu"
        return "gpu" if self.gpu_compute_capabilities else None

    def as_dict(self):
        return {"cpu_model": self.cpu_model, "cpu_flags": list(self.cpu_flags),
                "cpu_class": self.cpu_class,
                "gpu_compute_capabilities": [list(c) for c in self.gpu_compute_capabilities],
                "tpu": self.tpu}


def parse_cpuinfo(text):
    """(model name, relevant flags) from the text of /proc/cpuinfo."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags":
            flags.update(value.split())
    return model, tuple(f for f in RELEVANT_CPU_FLAGS if f in flags)


def cpu_class_override(environ=None):
    """The CPU class ALEXNET_TF_CPU_CLASS names, or None; a name not in CPU_CLASS_FLAGS is a
    ConfigError."""
    name = (os.environ if environ is None else environ).get(CPU_CLASS_ENV, "").strip()
    if not name:
        return None
    if name not in CPU_CLASS_FLAGS:
        raise errors.ConfigError(f"{CPU_CLASS_ENV}={name!r} is not a CPU class; use one of "
                                 f"{', '.join(CPU_CLASS_FLAGS)}, or unset it")
    return name


def detect():
    """The `Hardware` of this process: /proc/cpuinfo (or ALEXNET_TF_CPU_CLASS) and TensorFlow's
    visible devices."""
    import tensorflow as tf   # here, so that the pure functions need no TensorFlow
    try:
        with open("/proc/cpuinfo") as f:
            model, flags = parse_cpuinfo(f.read())
    except OSError:          # not Linux: no flags known, so nothing is assumed
        model, flags = "", ()
    override = cpu_class_override()
    if override:
        model = f"{model or platform.machine()} as class {override} ({CPU_CLASS_ENV})"
        flags = CPU_CLASS_FLAGS[override]
    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        if capability:
            capabilities.append(tuple(int(c) for c in capability))
    tpu = bool(tf.config.list_logical_devices("TPU"))
    return Hardware(model or platform.processor() or platform.machine(), flags,
                    tuple(capabilities), tpu)


def native_bfloat16(hardware):
    """Whether the device that computes has bfloat16 arithmetic of its own."""
    if hardware.accelerator == "tpu":
        return True
    if hardware.accelerator == "gpu":
        return all(c >= (8, 0) for c in hardware.gpu_compute_capabilities)
    return bool(set(hardware.cpu_flags) & set(NATIVE_BF16_CPU_FLAGS))


def choose_precision(hardware):
    """(precision, reason) for --mixed_precision=auto.

    bfloat16 where the hardware computes it natively (TPUs, NVIDIA GPUs of
    compute capability 8.0 and up, CPUs with AVX512_BF16 or AMX_BF16); float16
    with loss scaling on NVIDIA GPUs of compute capability 7.x; float32
    otherwise. With several GPUs the oldest decides.
    """
    if hardware.accelerator == "tpu":
        return BFLOAT16, "TPUs compute bfloat16 natively"
    if hardware.accelerator == "gpu":
        oldest = min(hardware.gpu_compute_capabilities)
        name = f"GPU compute capability {oldest[0]}.{oldest[1]}"
        if oldest >= (8, 0):
            return BFLOAT16, f"{name} computes bfloat16 natively"
        if oldest >= (7, 0):
            return FLOAT16, f"{name} has float16 tensor cores but no bfloat16"
        return FLOAT32, f"{name} has no fast half precision"
    native = [f for f in NATIVE_BF16_CPU_FLAGS if f in hardware.cpu_flags]
    if native:
        return BFLOAT16, f"the CPU computes bfloat16 natively ({', '.join(native)})"
    return FLOAT32, ("the CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag), "
                     "where bfloat16 is emulated and several times slower")


def precision_warning(precision, hardware):
    """One warning line for an explicit precision the hardware only emulates, else None."""
    if precision == BFLOAT16 and not native_bfloat16(hardware):
        device = ("GPUs of compute capability below 8.0" if hardware.accelerator == "gpu"
                  else f"a CPU of class {hardware.cpu_class}")
        return ("warning: --mixed_precision=bfloat16 on hardware without native bfloat16 "
                f"({device}): it is emulated and several times slower than float32; "
                f"--mixed_precision=auto picks {choose_precision(hardware)[0]} here")
    if precision == FLOAT16 and hardware.accelerator != "gpu":
        return ("warning: --mixed_precision=float16 without a GPU: CPUs have no float16 fast "
                "path and it is several times slower than float32; --mixed_precision=auto "
                "picks the fast precision")
    return None


def choose_jit(hardware, precision, placed_towers=False, data_parallel=False, inference=False):
    """(jit_compile, reason) for --jit_compile=auto.

    XLA compiles the train step on CPUs with AVX2 but no AVX-512 in float32,
    where it measured faster than TensorFlow's own kernels (docs/BENCHMARKS.md);
    on AVX-512 CPUs it measured slower (0.78x fp32, 0.48x bf16), and on GPUs
    and TPUs it was not measured, so it stays off there. It is off whenever the
    towers are placed on two devices or a data-parallel strategy runs, since one
    compiled step runs on one device.

    `inference`: the rule for a forward pass (eval, a study's evaluations), the
    same by CPU class: on AVX2 the compiled forward pass measured 1.2-1.3x
    TensorFlow's kernels; elsewhere training's measurements stand.
    """
    if placed_towers and not inference:
        return False, "the towers are placed on two devices; a compiled step runs on one"
    if data_parallel and not inference:
        return False, "a data-parallel strategy runs the step on several devices"
    if hardware.accelerator:
        return False, f"not measured on {hardware.accelerator.upper()}s; TensorFlow's kernels"
    if hardware.cpu_class == "avx2" and precision == FLOAT32:
        return True, (f"float32 on an AVX2 CPU without AVX-512 "
                      f"{'computes' if inference else 'trains'} faster compiled by XLA")
    return False, (f"{precision} on a CPU of class {hardware.cpu_class} "
                   f"{'computes' if inference else 'trains'} faster with TensorFlow's (oneDNN) "
                   "kernels than compiled by XLA")


def choose_lrn(hardware):
    """(implementation, reason) of LocalResponseNormalization's "auto".

    "matmul" (band-matrix window sums; shifted slices inside XLA) measured 1.6-2.3x
    faster than TF's LRN/LRNGrad kernels on an AVX2 CPU; on AVX-512 CPUs TF's
    kernel was the fastest of the replacements measured, and GPUs have their own
    (cuDNN) LRN, so "kernel" stays there.
    """
    if hardware.accelerator is None and hardware.cpu_class == "avx2":
        return "matmul", "band-matrix LRN measured faster than TF's kernel on AVX2 CPUs"
    return "kernel", f"TF's LRN kernel on {hardware.accelerator or hardware.cpu_class}"


@functools.lru_cache(maxsize=None)
def detected():
    """`detect()`, computed once per process."""
    return detect()


def resolve_precision(requested, hardware):
    """(precision, reason, warning or None) of a --mixed_precision value.

    `requested` is "auto", one of PRECISIONS, or "none" (older runs' name for
    float32).
    """
    if requested == AUTO:
        precision, reason = choose_precision(hardware)
        return precision, f"auto: {reason}", None
    precision = FLOAT32 if requested in ("none", None) else requested
    if precision not in PRECISIONS:
        raise errors.ConfigError(f"--mixed_precision must be auto or one of "
                                 f"{', '.join(PRECISIONS)}; got {requested!r}")
    return precision, "as asked", precision_warning(precision, hardware)


def resolve_jit(requested, hardware, precision, placed_towers=False, data_parallel=False,
                inference=False):
    """(jit_compile, reason) of a --jit_compile value: "auto", "true"/"false" or a bool.

    `inference`: for a forward pass (evaluation, prediction): `choose_jit(inference=True)`.
    """
    if requested == AUTO:
        jit, reason = choose_jit(hardware, precision, placed_towers, data_parallel, inference)
        return jit, f"auto: {reason}"
    if isinstance(requested, str):
        if requested.lower() not in ("true", "false"):
            raise errors.ConfigError(
                f"--jit_compile must be auto, true or false; got {requested!r}")
        requested = requested.lower() == "true"
    return bool(requested), "as asked"


# XLA's CPU backend calls oneDNN for convolutions and matmuls with this flag (faster: see
# docs/BENCHMARKS.md).
XLA_CPU_FLAGS = ("--xla_cpu_use_onednn=true",)


def configure_xla_cpu(environ=None):
    """Adds XLA_CPU_FLAGS to XLA_FLAGS unless the user set them; before XLA's first compile.

    XLA reads XLA_FLAGS once, when it first compiles; a flag the user already
    set (to any value) is left as it is.
    """
    environ = os.environ if environ is None else environ
    current = environ.get("XLA_FLAGS", "")
    missing = [f for f in XLA_CPU_FLAGS if f.split("=")[0] not in current]
    if missing:
        environ["XLA_FLAGS"] = " ".join([current] + missing).strip()
    return environ["XLA_FLAGS"]


# glibc's mallopt parameters (malloc.h) and the values `keep_freed_memory` sets.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
# mallopt takes an int and glibc stores the trim threshold as a size_t, so -1 is SIZE_MAX:
# never (2 GB was not enough at batch 128, where XLA's temporary buffer alone is 1.5 GB).
_NEVER_TRIM = -1


def available_memory_bytes(meminfo="/proc/meminfo"):
    """The memory the kernel says new work can take without swapping (MemAvailable), or None
    where that is not known (not Linux)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def keep_freed_memory(libc=None):
    """Makes glibc's malloc keep freed memory for reuse instead of giving it back to the OS.

    By default glibc serves large allocations with a fresh mmap, unmaps them
    when freed and trims the heap's free top, so a compiled (XLA) train step,
    which allocates its large buffers every step, page-faults them in afresh
    every step. The cost of keeping them: the process keeps its peak memory
    until it exits. So the entry points whose process exists to train or
    measure (`alexnet-train`, `alexnet-benchmark`, a study's process per run)
    call it, and library code does not (a test worker would keep every peak).

    Returns True if set; False where the C library has no mallopt (macOS,
    musl), where the allocator stays as it is.
    """
    mallopt = getattr(_c_library() if libc is None else libc, "mallopt", None)
    if mallopt is None:
        return False
    # All allocations from the heap (no mmap), and the heap never trimmed.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))


def give_back_freed_memory(libc=None):
    """Returns the memory glibc's malloc holds freed to the system (malloc_trim); before a
    process starts a large child (a converter) or after a test file. False where the C library
    has no malloc_trim."""
    trim = getattr(_c_library() if libc is None else libc, "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


def _c_library():
    """This process's C library (ctypes), or None where it cannot be found."""
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None

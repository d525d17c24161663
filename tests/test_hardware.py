"""Choices by the hardware: precision, XLA and LRN against CPU flag sets and device lists."""

import os
import subprocess
import sys

import pytest

from alexnet_tf import hardware
from alexnet_tf.hardware import Hardware

# /proc/cpuinfo excerpts of the two CPU classes this project meets, and two more.
AVX2_CPUINFO = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni
"""
AVX512_BF16_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 fma avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512_vnni
processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 fma avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512_vnni
"""
AMX_CPUINFO = "model name\t: Intel Xeon\nflags\t\t: avx2 fma avx512f amx_bf16 amx_tile\n"
AVX512_ONLY_CPUINFO = "model name\t: Intel Xeon\nflags\t\t: avx2 fma avx512f avx512bw\n"


def cpu(text):
    model, flags = hardware.parse_cpuinfo(text)
    return Hardware(model, flags)


def test_parse_cpuinfo_keeps_the_relevant_flags_and_the_model():
    assert hardware.parse_cpuinfo(AVX2_CPUINFO) == ("AMD EPYC", ("avx2", "fma"))
    assert hardware.parse_cpuinfo(AVX512_BF16_CPUINFO) == (
        "AMD EPYC 9R14", ("avx2", "fma", "avx512f", "avx512_bf16"))
    assert hardware.parse_cpuinfo("") == ("", ())
    # "avx512_bf16" must not be read into "avx512f" nor the other way round.
    assert hardware.parse_cpuinfo("flags : avx512_bf16x avx2x")[1] == ()


@pytest.mark.parametrize("text,cpu_class,precision", [
    (AVX2_CPUINFO, "avx2", "float32"),
    (AVX512_BF16_CPUINFO, "avx512_bf16", "bfloat16"),
    (AMX_CPUINFO, "amx", "bfloat16"),
    (AVX512_ONLY_CPUINFO, "avx512", "float32"),
    ("flags : sse2", "other", "float32"),
])
def test_cpu_precision_is_bfloat16_only_where_it_is_native(text, cpu_class, precision):
    found = cpu(text)
    assert found.cpu_class == cpu_class
    assert hardware.choose_precision(found)[0] == precision


@pytest.mark.parametrize("capabilities,precision", [
    (((8, 0),), "bfloat16"), (((9, 0), (8, 6)), "bfloat16"),
    (((7, 5),), "float16"), (((7, 0),), "float16"),
    (((8, 6), (7, 0)), "float16"),                  # mixed GPUs: the oldest decides
    (((6, 1),), "float32"),
])
def test_gpu_precision_follows_the_compute_capability(capabilities, precision):
    # The CPU's own flags do not matter when a GPU computes.
    found = Hardware("AMD EPYC", ("avx2", "fma"), capabilities)
    assert hardware.choose_precision(found)[0] == precision


def test_tpu_precision_is_bfloat16():
    assert hardware.choose_precision(Hardware(tpu=True))[0] == "bfloat16"


def test_explicit_bfloat16_on_an_avx2_cpu_runs_with_one_warning_line():
    precision, reason, warning = hardware.resolve_precision("bfloat16", cpu(AVX2_CPUINFO))
    assert (precision, reason) == ("bfloat16", "as asked")
    assert "emulated" in warning and "\n" not in warning
    assert hardware.resolve_precision("bfloat16", cpu(AVX512_BF16_CPUINFO))[2] is None
    assert hardware.resolve_precision("float16", cpu(AVX2_CPUINFO))[2].startswith("warning:")
    assert hardware.resolve_precision("float16", Hardware(gpu_compute_capabilities=((7, 0),)))[2] \
        is None


def test_auto_and_older_names_resolve():
    assert hardware.resolve_precision("auto", cpu(AVX2_CPUINFO))[:2] == (
        "float32", "auto: " + hardware.choose_precision(cpu(AVX2_CPUINFO))[1])
    assert hardware.resolve_precision("none", cpu(AVX512_BF16_CPUINFO))[0] == "float32"
    with pytest.raises(ValueError, match="--mixed_precision must be"):
        hardware.resolve_precision("float8", cpu(AVX2_CPUINFO))


@pytest.mark.parametrize("found,precision,placed,parallel,jit", [
    (cpu(AVX2_CPUINFO), "float32", False, False, True),      # measured faster with XLA
    (cpu(AVX2_CPUINFO), "bfloat16", False, False, False),
    (cpu(AVX512_BF16_CPUINFO), "float32", False, False, False),   # measured 0.78x with XLA
    (cpu(AVX512_BF16_CPUINFO), "bfloat16", False, False, False),  # measured 0.48x
    (cpu(AVX512_ONLY_CPUINFO), "float32", False, False, False),
    (cpu(AVX2_CPUINFO), "float32", True, False, False),      # towers on two devices
    (cpu(AVX2_CPUINFO), "float32", False, True, False),      # data parallel
    (Hardware("x", ("avx2", "fma"), ((8, 0),)), "float32", False, False, False),
])
def test_auto_jit_follows_the_measurements(found, precision, placed, parallel, jit):
    assert hardware.choose_jit(found, precision, placed, parallel)[0] is jit


@pytest.mark.parametrize("found,precision,jit", [
    (cpu(AVX2_CPUINFO), "float32", True),              # measured 1.2-1.3x with XLA
    (cpu(AVX2_CPUINFO), "bfloat16", False),
    (cpu(AVX512_BF16_CPUINFO), "bfloat16", False),
    (cpu(AVX512_BF16_CPUINFO), "float32", False),
    (cpu(AVX512_ONLY_CPUINFO), "float32", False),
    (Hardware("x", ("avx2", "fma"), ((8, 0),)), "float32", False),
])
def test_auto_inference_jit_follows_the_measurements(found, precision, jit):
    assert hardware.resolve_jit("auto", found, precision, inference=True)[0] is jit
    # Placement and data parallelism are training's concerns: inference ignores them.
    assert hardware.resolve_jit("false", found, precision, inference=True) == (False, "as asked")


def test_explicit_jit_values():
    found = cpu(AVX512_BF16_CPUINFO)
    assert hardware.resolve_jit("true", found, "bfloat16") == (True, "as asked")
    assert hardware.resolve_jit("False", found, "float32") == (False, "as asked")
    assert hardware.resolve_jit(False, found, "float32") == (False, "as asked")   # older runs
    assert hardware.resolve_jit("auto", cpu(AVX2_CPUINFO), "float32")[0] is True
    with pytest.raises(ValueError, match="--jit_compile must be"):
        hardware.resolve_jit("sometimes", found, "float32")


def test_lrn_implementation_by_cpu_class():
    assert hardware.choose_lrn(cpu(AVX2_CPUINFO))[0] == "matmul"
    assert hardware.choose_lrn(cpu(AVX512_BF16_CPUINFO))[0] == "kernel"
    assert hardware.choose_lrn(Hardware("x", ("avx2",), ((8, 0),)))[0] == "kernel"


def test_xla_cpu_flags_are_added_once_and_never_override_the_user():
    env = {}
    assert hardware.configure_xla_cpu(env) == "--xla_cpu_use_onednn=true"
    assert hardware.configure_xla_cpu(env) == "--xla_cpu_use_onednn=true"
    env = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert hardware.configure_xla_cpu(env) == "--xla_dump_to=/tmp/x --xla_cpu_use_onednn=true"
    env = {"XLA_FLAGS": "--xla_cpu_use_onednn=false"}
    assert hardware.configure_xla_cpu(env) == "--xla_cpu_use_onednn=false"


# Allocates and frees a block of argv[2] MB, then prints how much of it the process still
# holds (MB).
_HELD_AFTER_FREE = """
import os, sys
from alexnet_tf import hardware
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
if sys.argv[1] == "keep":
    assert hardware.keep_freed_memory()
before = rss_mb()
block = bytearray(int(sys.argv[2]) * 2 ** 20)     # zero-filled: every page touched
del block
print(rss_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc: Linux")
def test_keep_freed_memory_keeps_a_freed_block_for_reuse():
    def held(mode, mb):
        out = subprocess.run([sys.executable, "-c", _HELD_AFTER_FREE, mode, str(mb)],
                             check=True, capture_output=True, text=True).stdout
        return float(out.split()[-1])
    assert held("default", 256) < 64   # glibc unmapped the block when it was freed
    # Kept in the heap, ready for the next step's buffers, however large: 2.1 GB is more than
    # the largest positive trim threshold (2 GB - 1) mallopt can be given.
    assert held("keep", 2112) > 2048


# Frees 256 MB of heap blocks below a block still in use (so glibc cannot shrink the heap by
# itself), then prints how much the process gave back before and after give_back_freed_memory.
_GIVEN_BACK = """
import os
from alexnet_tf import hardware
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
blocks = [bytearray(64 * 1024) for _ in range(4096)]
sentinel = bytearray(64 * 1024)
before = rss_mb()
del blocks
held = rss_mb()
assert hardware.give_back_freed_memory()
print(before - held, before - rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc: Linux")
def test_give_back_freed_memory_returns_freed_heap_blocks():
    out = subprocess.run([sys.executable, "-c", _GIVEN_BACK], check=True, capture_output=True,
                         text=True, env={**os.environ, "MALLOC_ARENA_MAX": "1"}).stdout
    without, given = (float(x) for x in out.split()[-2:])
    assert without < 64 and given > 192, (without, given)


def test_keep_freed_memory_without_mallopt_leaves_the_allocator_alone():
    class NoMallopt:                   # e.g. macOS's or musl's C library
        pass
    assert hardware.keep_freed_memory(NoMallopt()) is False


def test_detect_reads_this_machine(monkeypatch):
    """The real detection, without ALEXNET_TF_CPU_CLASS: an independent read of /proc/cpuinfo's
    flags."""
    monkeypatch.delenv(hardware.CPU_CLASS_ENV, raising=False)
    try:
        with open("/proc/cpuinfo") as f:
            words = set(f.read().split())
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    found = hardware.detect()
    assert set(found.cpu_flags) == words & set(hardware.RELEVANT_CPU_FLAGS)
    native = bool(words & {"avx512_bf16", "amx_bf16"})
    assert hardware.native_bfloat16(found) is native
    assert found.as_dict()["cpu_class"] == found.cpu_class
    # The choices the `cpu_class` fixture stands in for, on this CPU.
    assert hardware.choose_precision(found)[0] == ("bfloat16" if native else "float32")
    assert hardware.choose_jit(found, "float32")[0] is (
        "avx2" in words and "avx512f" not in words)



# Each class's choices, by hand from the rules (docs/TESTING.md): precision for training and
# inference, XLA for a float32 train step and forward pass, LRN's implementation.
CLASS_CHOICES = {
    "avx2": ("float32", True, True, "matmul"),
    "avx512": ("float32", False, False, "kernel"),
    "avx512_bf16": ("bfloat16", False, False, "kernel"),
    "amx": ("bfloat16", False, False, "kernel"),
}


@pytest.mark.parametrize("name", sorted(CLASS_CHOICES))
def test_the_cpu_class_can_be_named_and_every_choice_follows_it(name, monkeypatch):
    monkeypatch.setenv("ALEXNET_TF_CPU_CLASS", name)
    found = hardware.detect()
    assert found.cpu_class == name and name in found.cpu_model
    assert found.accelerator is None
    precision, train_jit, inference_jit, lrn = CLASS_CHOICES[name]
    assert hardware.choose_precision(found)[0] == precision
    assert hardware.choose_jit(found, "float32")[0] is train_jit
    assert hardware.choose_jit(found, "float32", inference=True)[0] is inference_jit
    assert hardware.choose_jit(found, precision)[0] is (train_jit and precision == "float32")
    assert hardware.choose_lrn(found)[0] == lrn


def test_a_cpu_class_that_does_not_exist_is_one_line(monkeypatch):
    monkeypatch.setenv("ALEXNET_TF_CPU_CLASS", "avx9")
    with pytest.raises(hardware.errors.ConfigError) as caught:
        hardware.detect()
    assert str(caught.value) == ("ALEXNET_TF_CPU_CLASS='avx9' is not a CPU class; use one of "
                                 "avx2, avx512, avx512_bf16, amx, or unset it")


def test_tolerances_are_the_coarser_precisions():
    assert hardware.tolerance("probability", "float32", "float32") == 1e-5
    assert hardware.tolerance("probability", "float32", "bfloat16") == 5e-2
    assert hardware.tolerance("features", "bfloat16", "float32") == 3e-2
    assert hardware.tolerance("features", "float16", "float32") == 5e-3


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

"""The suite's own harness: a dead worker or a test past its time limit ends the run, naming it.

Each case runs pytest with two xdist workers on a small test file in a temporary folder, with
this suite's pytest.ini and conftest.py (told to skip TensorFlow's import, which the small file
does not need: 4-13 s in each of the run's three processes), and checks that the run ends (with
a failure that names the test) well within the limits: the real suite's limit is
tests/pytest.ini's `timeout`.
"""

import configparser
import os
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

INNER = '''
import os, signal, sys, time

def test_first():
    assert "tensorflow" not in sys.modules   # the harness's runs skip its import (conftest.py)

def test_dies():
    os.kill(os.getpid(), signal.SIGKILL)     # as the kernel's OOM killer ends a worker

def test_sleeps():
    time.sleep(3600)                         # as a test that hangs

def test_stuck():
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])   # as a hang inside C++
    time.sleep(3600)

def test_last():
    pass
'''


def run_inner(tmp_path, *args, limit=300, env=None):
    """(exit status, output, seconds) of pytest -n 2 on INNER with the suite's configuration."""
    for name in ("pytest.ini", "conftest.py"):
        shutil.copy(os.path.join(HERE, name), tmp_path / name)
    (tmp_path / "test_inner.py").write_text(INNER)
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider",
                           "test_inner.py", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=limit, env={**os.environ,
                                              "ALEXNET_TF_TEST_WITHOUT_TENSORFLOW": "1",
                                              **(env or {})})
    return done.returncode, done.stdout + done.stderr, time.time() - start


def test_the_suites_time_limit_ends_a_hang_within_ten_minutes():
    ini = configparser.ConfigParser()
    ini.read(os.path.join(HERE, "pytest.ini"))
    assert int(ini["pytest"]["timeout"]) <= 540                  # a hang ends within 10 minutes
    assert ini["pytest"]["timeout_method"] == "signal"           # conftest's, with a watchdog


def test_a_killed_worker_ends_the_run_with_the_test_named(tmp_path):
    # One file on one worker (loadfile): test_last is still to run when its worker dies.
    status, output, seconds = run_inner(tmp_path, "-k", "not sleeps and not stuck",
                                        "--dist", "loadfile")
    assert status == 1, output
    assert "crashed while running 'test_inner.py::test_dies'" in output, output
    assert "FAILED test_inner.py::test_dies" in output, output
    # Not replaced: test_last never runs.
    assert "replacing crashed worker" not in output and "1 failed, 1 passed" in output, output
    assert seconds < 120, seconds


def test_a_test_past_the_time_limit_fails_named_and_the_run_goes_on(tmp_path):
    status, output, seconds = run_inner(tmp_path, "-k", "sleeps or last", "--timeout=2")
    assert status == 1, output
    assert "FAILED test_inner.py::test_sleeps - Failed: Timeout" in output, output
    assert "1 failed, 1 passed" in output, output
    assert seconds < 120, seconds


def test_a_test_stuck_past_the_signal_ends_its_worker_with_the_test_named(tmp_path):
    status, output, seconds = run_inner(tmp_path, "-k", "stuck", "--timeout=2",
                                        env={"ALEXNET_TF_TIMEOUT_GRACE": "2"})
    assert status == 1, output
    assert ("test_inner.py::test_stuck: still running 2 s after the 2 s time limit; ending "
            "its worker") in output, output
    assert "crashed while running 'test_inner.py::test_stuck'" in output, output
    assert seconds < 120, seconds


POOL = '''
import os, sys
import tensorflow as tf

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))

tf.zeros([1]).numpy()                                  # TensorFlow and its allocator started
before = rss()
x = tf.random.uniform([100, 1024, 1024])               # 400 MiB from TensorFlow's allocator
assert float(tf.reduce_sum(x[:1, :1, :1])) >= 0
del x
print((rss() - before) / 2 ** 20)                      # MiB still held after it was freed
'''


def held_after_free(allocator):
    """MiB a fresh TensorFlow process still holds after freeing a 400 MiB tensor."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"}
    # oneDNN on whatever the CPU: TensorFlow turns it on by itself only on CPUs with AVX512_VNNI,
    # AVX512_BF16 or AMX, and the pool is oneDNN's.
    env.update(TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="1",
               **({"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"} if allocator == "system" else {}))
    done = subprocess.run([sys.executable, "-c", POOL], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.split()[-1])


def test_the_workers_give_freed_tensor_memory_back():
    """conftest.py turns oneDNN's pool allocator off (docs/TESTING.md): with the pool, a process
    keeps the memory of every tensor it freed; with the system allocator it does not. (On an
    AVX2-only CPU TensorFlow leaves oneDNN, and so its pool, off unless told.)"""
    assert os.environ.get("TF_ONEDNN_USE_SYSTEM_ALLOCATOR") == "1"
    assert held_after_free("pool") > 300            # what the suite's workers kept before
    assert held_after_free("system") < 50


FAULTS = '''
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20          # past malloc's mmap threshold: mapped afresh each time, as fc6's tensors
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


SMALL_PAGES = 4 * (256 << 20) // 4096       # FAULTS' writes, counted in 4 KB pages: 262,144


def malloc_page_faults(env):
    """Page faults of a process that mallocs and writes 256 MB four times (SMALL_PAGES)."""
    done = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


def test_the_workers_and_their_commands_get_mallocs_memory_in_huge_pages():
    """conftest.py sets glibc's malloc.hugetlb tunable before the workers start (docs/TESTING.md):
    what a worker or a command it starts mallocs is mapped 2 MB at a time, not 4 KB."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = f.read()
    except OSError:
        thp = "[never]"
    if "[never]" in thp:
        pytest.skip("this kernel gives no transparent huge pages")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # A worker started with it (glibc reads it then), not only in os.environ since; a
        # pytest without workers started before conftest.py, and only its children have it.
        started_with = open("/proc/self/environ", "rb").read().split(b"\0")
        assert any(v.startswith(b"GLIBC_TUNABLES=") and b"glibc.malloc.hugetlb=1" in v
                   for v in started_with), [v for v in started_with if v.startswith(b"GLIBC")]
    assert malloc_page_faults(dict(os.environ)) < SMALL_PAGES // 50
    if "[madvise]" in thp:        # where THP is "always", malloc's memory gets it without asking
        without = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        assert malloc_page_faults(without) > SMALL_PAGES // 2

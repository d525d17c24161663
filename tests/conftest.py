"""Test-session setup: two logical CPU devices, so tower placement is testable without GPUs.

This must run before TensorFlow initialises its devices, which is why it lives
here (pytest imports conftest.py before any test module).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Fewer glibc malloc arenas in the workers (they inherit it): TensorFlow's many threads otherwise
# each keep freed memory in an arena of their own.
os.environ.setdefault("MALLOC_ARENA_MAX", "2")
# TensorFlow's oneDNN builds allocate tensors from a pool that keeps its peak for the life of
# the process: a worker grew to 4.9 GB in test_train.py alone, where the system allocator (which
# gives freed memory back) ends at 2.4 GB. Its cost is a slower train step (about 15% on AMX), so
# only the suite sets it; docs/BENCHMARKS.md has the numbers.
os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
# malloc's memory in transparent huge pages (glibc 2.35 on, where THP is "always" or "madvise"):
# tensors of fc6's size are mmap'd afresh by every step, 4 KB page by page otherwise: 15-44x fewer
# page faults, train steps 13-25% faster on malloc (docs/BENCHMARKS.md). The workers inherit it.
if "glibc.malloc.hugetlb" not in os.environ.get("GLIBC_TUNABLES", ""):
    os.environ["GLIBC_TUNABLES"] = ":".join(
        filter(None, (os.environ.get("GLIBC_TUNABLES"), "glibc.malloc.hugetlb=1")))

# tests/test_harness.py's own pytest runs check the hooks below on tests that need no
# TensorFlow: they skip its import (4-13 s in each of their three processes).
if os.environ.get("ALEXNET_TF_TEST_WITHOUT_TENSORFLOW") != "1":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import pytest  # noqa: E402

def pytest_configure(config):
    """A worker that dies (killed, out of memory, past the timeout) is not replaced: xdist's
    replacement waited forever once (2026-12-03); without one the run ends naming the test."""
    _session_temporary_folder(config)
    if getattr(config.option, "maxworkerrestart", "") is None:
        config.option.maxworkerrestart = "0"
    # xdist hands out the files with the most tests first unless told not to; SLOW_FIRST's
    # order (below) is the one that lets both workers end together.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def _session_temporary_folder(config):
    """The session's processes (workers, the tools they start) write their temporary files in one
    folder that the session removes at its end: TensorFlow's autograph leaves a
    `__autograph_generated_file*.py` for every converted function of a process that is killed,
    and TFDS an empty `tmp*tfds` folder per dataset it opens. pytest's own temporary folders
    (kept for failed tests) stay in the system's."""
    import shutil
    import tempfile
    if hasattr(config, "workerinput") or os.environ.get("ALEXNET_TF_TEST_TMPDIR"):
        return                                  # a worker, or a pytest inside the suite's
    system = tempfile.gettempdir()
    folder = tempfile.mkdtemp(prefix="alexnet_tf-tests-", dir=system)
    os.environ.update(ALEXNET_TF_TEST_TMPDIR=folder, TMPDIR=folder)
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", system)
    tempfile.tempdir = None
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


# Seconds a test may go on past the time limit's signal (stuck where no Python signal handler
# runs, inside C++) before its worker is ended.
TIMEOUT_GRACE = float(os.environ.get("ALEXNET_TF_TIMEOUT_GRACE", "60"))


try:
    import pytest_timeout
except ImportError:                  # (the test extra installs it; without it, no time limit)
    pytest_timeout = None


@pytest.hookimpl(tryfirst=True)
def _set_timer(item, settings):
    """pytest-timeout's signal method with a watchdog behind it. At `timeout` seconds SIGALRM
    fails the test ("Timeout", with its stack) and the run goes on; a test stuck where the
    handler cannot run is ended TIMEOUT_GRACE seconds later with its worker (one line on the
    worker's stderr), which xdist reports as a crash in that test, and no worker replaces it."""
    import signal
    import threading
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None                             # pytest-timeout's own methods

    def on_alarm(signum, frame):
        __tracebackhide__ = True
        pytest_timeout.timeout_sigalrm(item, settings)

    def watchdog():
        capture = item.config.pluginmanager.getplugin("capturemanager")
        if capture:
            capture.suspend_global_capture(in_=True)    # the line goes to the real stderr
        os.write(2, (f"\n{item.nodeid}: still running {TIMEOUT_GRACE:g} s after the "
                     f"{settings.timeout:g} s time limit; ending its worker\n").encode())
        os._exit(1)

    timer = threading.Timer(settings.timeout + TIMEOUT_GRACE, watchdog)
    timer.daemon = True

    def cancel():
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        timer.cancel()

    item.cancel_timeout = cancel
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    timer.start()
    return True


if pytest_timeout is not None:
    pytest_timeout_set_timer = _set_timer


# tests/memory_watch.py: each worker names the test it runs, so memory is attributed per file.
_TRACE_DIR = os.environ.get("ALEXNET_TF_TEST_TRACE")
if _TRACE_DIR:
    def pytest_runtest_setup(item):
        name = os.path.join(_TRACE_DIR, os.environ.get("PYTEST_XDIST_WORKER", "main"))
        with open(name + ".tmp", "w") as f:
            f.write(f"{os.getpid()} {item.nodeid}")
        os.replace(name + ".tmp", name)


# The slowest files first, by worker time (the AMX runs of 2026-12-03), so that two workers
# (--dist loadfile) end together instead of one waiting for the other's last long file;
# test_harness.py (two pytest workers of its own) first of all, while the workers are small (a
# worker keeps memory from every file it ran, docs/TESTING.md).
# test_distribute.py second, beside test_harness.py (the lightest), far from test_benchmark.py.
SLOW_FIRST = ("test_harness.py", "test_distribute.py", "test_export_formats.py", "test_export.py",
              "test_train.py", "test_study.py", "test_backends.py", "test_storage_faults.py",
              "test_applications.py", "test_cli.py", "test_benchmark.py", "test_ownership.py",
              "test_finetune.py", "test_caffe.py", "test_fuzz.py", "test_deploy.py",
              "test_selfcheck.py")
# The files whose processes take the most memory never run at the same time on the two workers:
# at f48a401 test_distribute.py (two training workers: 9.2 GB with its pytest worker) beside
# test_benchmark.py (7.7 GB) put the machine at its peak, 16.0 GB.
ONE_AT_A_TIME = ("test_distribute.py", "test_benchmark.py")


@pytest.fixture(autouse=True, scope="module")
def _the_heaviest_files_one_at_a_time(request):
    """A file of ONE_AT_A_TIME holds a lock in the session's folder while it runs (the other
    worker, reaching one, waits); the kernel lets go of it if the worker dies."""
    folder = os.environ.get("ALEXNET_TF_TEST_TMPDIR")
    if request.path.name not in ONE_AT_A_TIME or not folder:
        yield
        return
    import fcntl
    with open(os.path.join(folder, "heaviest-files.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(autouse=True, scope="session")
def _forker_ends_with_the_worker():
    """The process that forked commands (`helpers.cli`, `helpers.refusal`) serves every file of
    its worker (0.7 GB, against 7-12 s to start one per file) and ends with the worker."""
    yield
    import helpers
    helpers.close_forker()


def pytest_addoption(parser):
    parser.addoption("--walkthrough", action="store_true",
                     help="also run the README walkthrough (tests/test_readme.py, about ten "
                          "minutes; .ci/run runs it after the suite)")
    parser.addoption("--group", default=None, metavar="K/N",
                     help="run the K-th of N groups of test files, each group with workers of "
                          "its own (a worker keeps memory from every file it ran, "
                          "docs/TESTING.md)")


def _rank(name):
    return (SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)), name


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: _rank(item.path.name)[0])   # stable: a file's order is kept
    if not config.getoption("--walkthrough"):
        skip = pytest.mark.skip(reason="the README walkthrough runs with --walkthrough (.ci/run)")
        for item in items:
            if item.get_closest_marker("walkthrough"):
                item.add_marker(skip)
    group = config.getoption("--group")
    if not group:
        return
    try:
        k, n = (int(part) for part in group.split("/"))
        assert 1 <= k <= n
    except (ValueError, AssertionError):
        raise pytest.UsageError(f"--group={group}: give K/N with 1 <= K <= N, e.g. 1/2")
    # Files dealt out in turn by rank (slowest first), so each group gets slow and quick ones.
    names = sorted({item.path.name for item in items}, key=_rank)
    chosen = {name for i, name in enumerate(names) if i % n == k - 1}
    config.hook.pytest_deselected(items=[i for i in items if i.path.name not in chosen])
    items[:] = [i for i in items if i.path.name in chosen]


# The CPU classes whose choices differ (hardware.CPU_CLASS_FLAGS): every test that depends on the
# class takes the `cpu_class` fixture and runs once as each, on whatever CPU runs the suite.
CPU_CLASSES = ("avx2", "avx512_bf16", "amx")


@pytest.fixture(params=CPU_CLASSES)
def cpu_class(request, monkeypatch):
    """This process (and the tools it starts) decide as a CPU of this class
    (ALEXNET_TF_CPU_CLASS); the real detection returns after the test."""
    from alexnet_tf import hardware
    monkeypatch.setenv(hardware.CPU_CLASS_ENV, request.param)
    hardware.detected.cache_clear()
    yield request.param
    hardware.detected.cache_clear()


# A test that ran this long (s) is followed by a garbage collection and malloc_trim: its models
# and tensors would otherwise stay in the worker's heap, and the next test's peak adds to them.
LONG_TEST = 3.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    report = getattr(item, "_alexnet_tf_call_seconds", 0.0)
    if (report >= LONG_TEST and nextitem is not None and nextitem.path == item.path
            and "tensorflow" in sys.modules):
        import gc

        from alexnet_tf import hardware
        gc.collect()
        hardware.give_back_freed_memory()


def pytest_runtest_makereport(item, call):
    if call.when == "call":
        item._alexnet_tf_call_seconds = call.duration      # pytest's own timing of the test


@pytest.fixture(scope="module", autouse=True)
def _free_memory_after_each_file():
    """A worker runs many files: after each, Keras' global state (graphs, the names of traced
    models) is dropped and glibc gives the freed memory back to the system."""
    yield
    if "tensorflow" not in sys.modules:           # nothing of Keras' or TensorFlow's to free
        return
    import gc

    import keras

    from alexnet_tf import hardware
    keras.backend.clear_session()
    gc.collect()
    hardware.give_back_freed_memory()


@pytest.fixture(scope="session")
def tiny_data_dir():
    """A TFDS data_dir with the built-in dataset's `tiny` config prepared (80 + 40 images) and its
    training statistics computed, made once for the session's processes (`helpers.made_once`);
    tests only read it."""
    from helpers import made_once

    def prepare(folder):
        import tensorflow_datasets as tfds

        import alexnet_tf.data.shapes_dataset  # noqa: F401  (registers the builder)
        from alexnet_tf.data import dataset_stats, sources
        tfds.builder("alexnet_shapes/tiny", data_dir=folder).download_and_prepare()
        # Its statistics too: the command that computes them says so in a line of its own,
        # which a test counting a refusal's lines would see if it happened to run first.
        dataset_stats.stats_for(sources.open_source("alexnet_shapes/tiny", folder))
    return made_once("tfds", prepare)

"""Runs a command (the test suite) and samples the machine's memory while it runs.

    .venv/bin/python tests/memory_watch.py --json mem.json -- \
        .venv/bin/python -m pytest tests -q -n 2 --dist loadfile

Every --interval seconds (2) it reads the machine's memory in use (/proc/meminfo:
MemTotal - MemAvailable) and, for each pytest worker, the memory of the worker and all its child
processes together (proportional set sizes: a shared library counts once). tests/conftest.py tells it which test each worker runs: with
ALEXNET_TF_TEST_TRACE set (this script sets it to a temporary folder), every worker writes
"<pid> <test id>" to a file named after itself there at the start of each test. At the end it
prints a table, per test file, of the largest worker-tree RSS and the machine's memory in use
while that file ran, the machine's peak, and the peak of the command's own processes together
(its resident memory and its descendants'); --json writes the same. Its exit status is the
command's. Linux only (it reads /proc).
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

TRACE_ENV = "ALEXNET_TF_TEST_TRACE"
GB = 1024 ** 3


def machine_used():
    """Bytes in use on the machine: MemTotal - MemAvailable."""
    fields = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0]) * 1024
    return fields["MemTotal"] - fields["MemAvailable"]


def processes():
    """{pid: (parent pid, resident bytes)} of every process that can be read."""
    table = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/statm") as f:
                resident = int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue                      # ended between listdir and open
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(name)] = (int(fields[1]), resident)
    return table


def proportional(pid, resident):
    """The process's proportional set size (its resident pages, each shared page divided among
    the processes that map it: the libraries a parent and its child share count once), or
    `resident` where smaps_rollup cannot be read."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resident


def tree_rss(pid, table):
    """Memory of `pid` and all its descendants together (their proportional set sizes)."""
    children = collections.defaultdict(list)
    for child, (parent, _) in table.items():
        children[parent].append(child)
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        if current in table:
            total += proportional(current, table[current][1])
            todo.extend(children[current])
    return total


def current_tests(trace_dir):
    """[(worker pid, test file)] of the tests the workers run now."""
    found = []
    for name in os.listdir(trace_dir):
        try:
            with open(os.path.join(trace_dir, name)) as f:
                pid, _, test = f.read().strip().partition(" ")
            found.append((int(pid), test.split("::")[0]))
        except (OSError, ValueError):
            continue
    return found


def watch(command, interval):
    """Runs `command`; returns (exit status, peak machine bytes, peak bytes of the command's
    process tree, {file: peaks}, seconds)."""
    per_file = collections.defaultdict(lambda: {"tree_rss": 0, "machine": 0, "seconds": 0.0})
    peak = tree_peak = 0
    start = last = time.time()
    with tempfile.TemporaryDirectory(prefix="memory_watch_") as trace_dir:
        child = subprocess.Popen(command, env={**os.environ, TRACE_ENV: trace_dir})
        while child.poll() is None:
            used, table = machine_used(), processes()
            now, running = time.time(), current_tests(trace_dir)
            if used > peak:
                peak, peak_files = used, sorted(test_file for _, test_file in running)
            tree_peak = max(tree_peak, tree_rss(child.pid, table))
            for pid, test_file in running:
                entry = per_file[test_file]
                entry["tree_rss"] = max(entry["tree_rss"], tree_rss(pid, table))
                entry["machine"] = max(entry["machine"], used)
                entry["seconds"] += now - last       # a worker's time in the file, sampled
            last = now
            time.sleep(interval)
    per_file = dict(per_file)
    per_file["(at the machine's peak)"] = {"files": peak_files} if peak else {}
    return child.returncode, peak, tree_peak, per_file, time.time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--json", help="also write the peaks to this file")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    status, peak, tree_peak, per_file, seconds = watch(command, args.interval)
    at_peak = per_file.pop("(at the machine's peak)").get("files", [])
    rows = sorted(per_file.items(), key=lambda item: -item[1]["tree_rss"])
    print(f"\n{'test file':<36} {'worker+children GB':>19} {'machine in use GB':>18} "
          f"{'worker s':>9}")
    for name, entry in rows:
        print(f"{name:<36} {entry['tree_rss'] / GB:>19.2f} {entry['machine'] / GB:>18.2f} "
              f"{entry['seconds']:>9.0f}")
    print(f"the command's processes together: {tree_peak / GB:.2f} GB at their peak")
    print(f"machine's peak memory in use: {peak / GB:.2f} GB in {seconds:.0f} s "
          f"(sampled every {args.interval:g} s), running {', '.join(at_peak) or 'no test'}; "
          f"exit status {status}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": command, "exit_status": status, "seconds": round(seconds, 1),
                       "interval": args.interval, "peak_machine_bytes": peak,
                       "peak_command_tree_bytes": tree_peak,
                       "files_at_peak": at_peak, "files": per_file}, f, indent=1)
    return status


if __name__ == "__main__":
    sys.exit(main())

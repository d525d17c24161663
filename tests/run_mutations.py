"""Applies each mutation of `mutations.CATALOGUE` to a scratch copy and runs its tests.

    .venv/bin/python tests/run_mutations.py [--only NAME,NAME] [--json FILE]

The repository's tracked files (and any not yet committed) are copied to a
temporary folder once; each mutation is applied there, its tests run with that
copy first on the import path, and the file is put back. A mutation is caught
when its tests fail. Prints a table (caught / missed, seconds) and exits 1 if
any was missed or could not be applied. Runs on demand, not in CI.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from mutations import CATALOGUE  # noqa: E402


def scratch_copy():
    """The repository's files (tracked and untracked, not ignored) in a temporary folder."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    folder = tempfile.mkdtemp(prefix="alexnet_tf-mutations-")
    for name in listed:
        if os.path.isfile(os.path.join(REPO, name)):
            os.makedirs(os.path.join(folder, os.path.dirname(name)), exist_ok=True)
            shutil.copy2(os.path.join(REPO, name), os.path.join(folder, name))
    return folder


def run_one(mutation, folder, timeout):
    """("caught" | "missed" | "not applied: ...", seconds)."""
    path = os.path.join(folder, mutation.path)
    original = open(path, encoding="utf-8").read()
    if original.count(mutation.old) != 1:
        return f"not applied: the text occurs {original.count(mutation.old)} times", 0.0
    with open(path, "w", encoding="utf-8") as f:
        f.write(original.replace(mutation.old, mutation.new))
    env = dict(os.environ, PYTHONPATH=folder, TF_CPP_MIN_LOG_LEVEL="3")
    start = time.time()
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p",
                                 "no:cacheprovider", *mutation.tests], cwd=folder, env=env,
                                capture_output=True, text=True, timeout=timeout)
        outcome = "missed" if result.returncode == 0 else (
            "caught" if result.returncode == 1 else f"caught (pytest exit {result.returncode})")
    except subprocess.TimeoutExpired:
        outcome = "caught (timed out)"
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original)
    return outcome, time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated mutation names")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutation")
    args = parser.parse_args()
    chosen = [m for m in CATALOGUE if not args.only or m.name in args.only.split(",")]
    folder = scratch_copy()
    rows = []
    try:
        print(f"{'mutation':<34} {'outcome':<10} {'s':>6}  promise", flush=True)
        for mutation in chosen:
            outcome, seconds = run_one(mutation, folder, args.timeout)
            rows.append({"name": mutation.name, "promise": mutation.promise,
                         "outcome": outcome, "seconds": round(seconds, 1),
                         "tests": list(mutation.tests)})
            print(f"{mutation.name:<34} {outcome:<10} {seconds:6.0f}  {mutation.promise}",
                  flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    caught = sum(row["outcome"].startswith("caught") for row in rows)
    print(f"{caught} caught, {len(rows) - caught} missed or not applied, of {len(rows)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""`python -m alexnet_tf.selfcheck`: its stored reference against a numpy forward pass, and the
command itself on this machine (every check passes; a wrong reference fails it)."""

import os
import shutil
import subprocess
import sys

import numpy as np

from alexnet_tf import selfcheck
from helpers import REPO


def conv(x, kernel, bias, stride, pad):
    """NHWC cross-correlation (Keras' convolution), written out over the kernel's offsets."""
    x = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    size = kernel.shape[0]
    out = (x.shape[1] - size) // stride + 1
    y = np.zeros((x.shape[0], out, out, kernel.shape[-1]))
    for i in range(size):
        for j in range(size):
            patch = x[:, i:i + stride * (out - 1) + 1:stride, j:j + stride * (out - 1) + 1:stride]
            y += patch @ kernel[i, j]
    return y + bias


def lrn(a, n, k, alpha, beta):
    """Section 3.3: alpha times the plain sum over the clipped window of n channels."""
    b = np.empty_like(a)
    for c in range(a.shape[-1]):
        low, high = max(0, c - n // 2), min(a.shape[-1] - 1, c + n // 2)
        b[..., c] = a[..., c] / (k + alpha * (a[..., low:high + 1] ** 2).sum(-1)) ** beta
    return b


def max_pool(a, size, stride, ceil):
    """Max pooling; with `ceil`, Caffe's extra window where the last one overhangs (clipped)."""
    length = a.shape[1]
    out = (-(-(length - size) // stride) if ceil else (length - size) // stride) + 1
    y = np.full((a.shape[0], out, out, a.shape[-1]), -np.inf)
    for p in range(out):
        for q in range(out):
            window = a[:, p * stride:p * stride + size, q * stride:q * stride + size]
            y[:, p, q] = window.max(axis=(1, 2))
    return y


def numpy_forward():
    model = selfcheck.small_network()
    w = [v.astype(np.float64) for v in selfcheck.small_network_weights(model)]
    x = selfcheck.small_network_inputs().astype(np.float64)
    h = np.maximum(conv(x, w[0], w[1], 4, 0), 0)
    assert h.shape[1:] == (16, 16, 16)
    h = max_pool(lrn(h, 5, 2.0, 1e-3, 0.75), 3, 2, ceil=True)
    assert h.shape[1:] == (8, 8, 16)                  # floor rounding would give 7
    h = np.maximum(conv(h, w[2], w[3], 1, 2), 0)
    h = max_pool(lrn(h, 5, 1.0, 1e-2, 0.75), 3, 2, ceil=False)
    logits = h.reshape(len(h), -1) @ w[4] + w[5]
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_the_stored_reference_is_a_numpy_forward_pass():
    expected = numpy_forward()
    assert expected.max(-1).min() < 0.9 and np.ptp(expected) > 0.05     # not flat, not one-hot
    with np.load(selfcheck.REFERENCE) as stored:
        np.testing.assert_allclose(stored["probabilities"], expected, rtol=1e-5, atol=1e-6)


def run_selfcheck(*args, env_extra=None, cwd=REPO):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "alexnet_tf.selfcheck", "--batch_size=4",
                           "--steps=3", "--repeats=1", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_selfcheck_passes_here_and_fails_on_a_wrong_reference(tmp_path):
    done = run_selfcheck()
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("alexnet_tf self-check: Keras ") and "on tensorflow" in lines[0]
    for check in ("forward (small network)", "training (float32)", "training (mixed_bfloat16)"):
        assert any(line.strip().startswith(check) and ": " in line and " ok: " in line
                   for line in lines), (check, done.stdout)
    table = [line.split() for line in lines if line.strip().startswith(("inference", "training,"))]
    assert [int(row[-2]) for row in table if row[0] == "inference,"] == [1, 4, 32]
    assert [(row[1], int(row[-2])) for row in table if row[0] == "training,"] == [
        ("float32", 4), ("mixed_bfloat16", 4)]
    assert all(float(row[-1]) > 0 for row in table)
    assert lines[-1] == "self-check passed"

    # The same command on a copy of the package whose stored reference is wrong: exit 1, and
    # with --fail_fast nothing after the failed check runs.
    copy = tmp_path / "alexnet_tf"
    shutil.copytree(os.path.join(REPO, "alexnet_tf"), copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    with np.load(selfcheck.REFERENCE) as stored:
        np.savez(copy / "selfcheck_reference.npz", probabilities=stored["probabilities"][::-1])
    wrong = run_selfcheck("--fail_fast", env_extra={"PYTHONPATH": str(tmp_path)},
                          cwd=str(tmp_path))
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr[-2000:]
    assert "forward (small network)      FAILED" in wrong.stdout
    assert "training" not in wrong.stdout and "images/s" not in wrong.stdout, wrong.stdout
    assert wrong.stderr.strip().splitlines()[-1] == "self-check FAILED: forward (small network)"


def test_a_failed_check_fails_the_run_and_fail_fast_stops_there(monkeypatch, capsys):
    """The command's order of checks, with each check replaced by a stand-in that says how it
    went: without --fail_fast every check and the timing still run after a failure."""
    ran = []
    monkeypatch.setattr(selfcheck, "check_forward", lambda: (False, "differs"))
    monkeypatch.setattr(selfcheck, "check_training",
                        lambda policy, steps, batch: ran.append(policy) or (True, "fell", 9.0))
    monkeypatch.setattr(selfcheck, "inference_model", lambda: None)
    monkeypatch.setattr(selfcheck, "inference_rate",
                        lambda model, batch, repeats: ran.append(batch) or 5.0)
    assert selfcheck.main(["--batch_size=4"]) == 1
    assert ran == ["float32", "mixed_bfloat16", 1, 4, 32]
    assert capsys.readouterr().err.strip() == "self-check FAILED: forward (small network)"

    ran.clear()
    monkeypatch.setattr(selfcheck, "check_forward", lambda: (True, "equal"))
    monkeypatch.setattr(selfcheck, "check_training",
                        lambda policy, steps, batch: ran.append(policy) or (False, "rose", 9.0))
    assert selfcheck.main(["--fail_fast"]) == 1
    assert ran == ["float32"]
    assert capsys.readouterr().err.strip() == "self-check FAILED: training (float32)"
    assert selfcheck.main([]) == 1 and ran[1:] == ["float32", "mixed_bfloat16", 1, 32, 128]

"""The absl CLIs end to end, as a user runs them (subprocesses, the built-in tiny dataset)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from helpers import NATIVE_LOG, REPO, cli, command_name, free_ports, refusal

QUICK = ["--flagfile=" + os.path.join(REPO, "flags", "quickstart.cfg"), "--batch_size=8",
         "--dataset=alexnet_shapes/tiny", "--log_steps=1", "--mixed_precision=float32",
         "--jit_compile=false"]


def test_train_resume_and_evaluate_end_to_end(tiny_data_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    first = cli("train", *QUICK, f"--data_dir={tiny_data_dir}", f"--model_dir={model_dir}",
                "--max_steps=3", fresh=True)      # fresh: its own native fd 2 (quiet, below)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Starting from step 0" in first.stdout
    assert "epoch 1 step 3/3 loss" in first.stdout and "img/s ETA" in first.stdout
    assert "validation at step 3: loss" in first.stdout             # a cut-short run validates
    assert os.path.exists(os.path.join(model_dir, "ckpt-3.index"))
    again = cli("train", *QUICK, f"--data_dir={tiny_data_dir}", f"--model_dir={model_dir}",
                "--max_steps=5")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines()[0].startswith("Resuming from step 3 (epoch 1) of ")
    assert "epoch 1 step 5/5" in again.stdout

    out = str(tmp_path / "eval.json")
    result = cli("evaluate", f"--model_dir={model_dir},{model_dir}", "--checkpoint=latest",
                 "--ten_crop", f"--json={out}", fresh=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "top-1 error" in result.stdout and "2 CNNs (mean softmax)" in result.stdout
    # Each run's whole path (not cut from the left) and the checkpoint it scored.
    scored = [line for line in result.stdout.splitlines() if line.startswith(str(model_dir))]
    assert len(scored) == 2 and all(line.split()[1] == "ckpt-5" for line in scored), result.stdout
    rows = json.load(open(out))["results"]
    assert len(rows) == 3 and rows[0]["examples"] == 40
    assert rows[2]["top1_error"] == rows[0]["top1_error"]     # the same model twice: same errors
    for done in (first, result):      # quiet: TensorFlow's log is off (a forked command's
        # native fd 2 is its forking process's, silenced: only a fresh one can show it)
        assert not re.search(NATIVE_LOG, done.stderr, re.M), done.stderr[-3000:]

    # The run's own network, as plain text (a flag that differs from the run's is not used).
    summary = cli("summary", f"--model_dir={model_dir}", "--lrn=false")
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert f"the network of the run in {model_dir}" in summary.stdout
    assert "lrn=True" in summary.stdout and "lrn1_a" in summary.stdout
    assert re.search(r"^fc8 +Dense +10 +40,970 +- +concat8$", summary.stdout, re.M)
    # 10 classes: the paper's two-tower count with fc8 of 10 outputs (4097 x 10), by hand.
    assert "parameters: 56,909,194 (tower a: 28,434,112, tower b: 28,434,112)" in summary.stdout
    # Without a run, a config of the built-in dataset has its 10 classes too.
    tiny = cli("summary", "--dataset=alexnet_shapes/tiny")
    assert tiny.returncode == 0 and "parameters: 56,909,194" in tiny.stdout, tiny.stderr[-2000:]

    # alexnet-predict: a good image classified; a text file and an empty file one line each.
    good, text, empty = (str(tmp_path / name) for name in ("good.png", "text.jpg", "empty.png"))
    from PIL import Image
    Image.new("RGB", (64, 48), (200, 30, 30)).save(good)
    open(text, "w").write("not an image")
    open(empty, "w").close()
    predicted = cli("predict", f"--model_dir={model_dir}", "--checkpoint=latest", good, text,
                    empty)
    assert predicted.returncode == 1
    # What the network computes in (the hardware's choice), the checkpoint it ran, then the
    # good file's top-5.
    first, second, third = predicted.stdout.splitlines()[:3]
    assert first.startswith("computing in ") and "(auto: " in first
    assert second.startswith("Predicting with ") and "ckpt-" in second and "(checkpoint, " in second
    assert third == good and "1. " in predicted.stdout
    assert predicted.stderr.splitlines() == [
        f"alexnet-predict: error: {text}: not a JPEG, PNG, GIF or BMP image",
        f"alexnet-predict: error: {empty}: an empty file, not an image"]


@pytest.mark.parametrize("args,status,message", [
    (["--learning_rate=-1"], 2, "--learning_rate=-1: must be > 0, e.g. 0.01, or "
                                "0.004,float32:0.005"),
    ([], 2, "--model_dir is required (give --model_dir=...)"),
    (["--batch_sise=8"], 2, "unknown flag --batch_sise (did you mean --batch_size? alexnet-train "
                            "--helpshort lists its flags)"),
    (["extra"], 2, "unexpected arguments: extra"),
    (["--epochs=14,fp8:2"], 2, "--epochs=14,fp8:2: 'fp8' is not a precision (one of float32, "
                               "bfloat16, float16)"),
    (["--jit_compile=maybe"], 2, "--jit_compile=maybe: value should be one of "
                                 "<auto|true|false>"),
    (["--dataset=no_such_data"], 1, "unknown dataset 'no_such_data'"),
    (["--batch_size=512"], 1, "--batch_size=512 is larger than the train split (80 images)"),
    (["--towers_on=/GPU:0,/GPU:1"], 1, "tower device '/GPU:0' does not exist here"),
])
def test_every_refusal_is_one_line_with_its_exit_status(args, status, message, tiny_data_dir,
                                                        tmp_path):
    model_dir = [] if args == [] else [f"--model_dir={tmp_path}"]
    dataset = [] if "--dataset" in " ".join(args) else ["--dataset=alexnet_shapes/tiny"]
    result = refusal("train", f"--data_dir={tiny_data_dir}", *dataset, *model_dir, *args,
                     "--max_steps=1", timeout=120)
    assert result.returncode == status, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("alexnet-train: error: "), result.stderr
    assert message in lines[0]
    assert not os.path.exists(os.path.join(tmp_path, "checkpoint"))   # no work was done


def test_a_refusal_in_a_forked_process_is_the_commands_own(tiny_data_dir, tmp_path):
    """The refusal tests run forked (`helpers.refusal`): the same exit status, stdout and stderr
    as the command started afresh, for a usage error (2) and a job's refusal (1)."""
    for args in ([f"--model_dir={tmp_path}", "--batch_sise=8"],
                 [f"--model_dir={tmp_path}", f"--data_dir={tiny_data_dir}",
                  "--dataset=alexnet_shapes/tiny", "--batch_size=512"]):
        forked, fresh = refusal("train", *args), cli("train", *args, timeout=120, fresh=True)
        assert fresh.returncode in (1, 2) and fresh.stderr.startswith("alexnet-train: error: ")
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            fresh.returncode, fresh.stdout, fresh.stderr)


def test_the_forking_process_serves_many_tests_and_restarts_when_the_environment_changes(
        monkeypatch, tiny_data_dir, tmp_path):
    """`helpers.forked` keeps its forking process while the commands' environment stays the
    same (pytest's PYTEST_CURRENT_TEST, which changes with every test, is not theirs) and starts
    it again when a setting of the commands' changes, so a command never runs in a stale one."""
    import helpers
    from alexnet_tf import hardware

    def forker_pid(*env):
        for name, value in env:
            monkeypatch.setenv(name, value)
        done = refusal("train", "--batch_sise=8")
        assert done.returncode == 2 and "unknown flag --batch_sise" in done.stderr
        return helpers._forker.pid

    first = forker_pid()
    assert forker_pid(("PYTEST_CURRENT_TEST", "test_other.py::test_next (call)")) == first
    second = forker_pid(("ALEXNET_TF_SOME_SETTING", "1"))
    assert second != first
    # The CPU class is read when a command runs (helpers.AT_RUN_TIME): it goes with the command
    # to the same forking process, and the command decides by it, then by the CPU again.
    assert forker_pid((hardware.CPU_CLASS_ENV, "avx2")) == second
    train = ("train", f"--data_dir={tiny_data_dir}", "--dataset=alexnet_shapes/tiny",
             f"--model_dir={tmp_path}", "--max_steps=1", "--batch_size=512")
    monkeypatch.setenv(hardware.CPU_CLASS_ENV, "bogus")
    done = refusal(*train)
    assert done.returncode == 1 and helpers._forker.pid == second
    assert f"{hardware.CPU_CLASS_ENV}='bogus' is not a CPU class" in done.stderr, done.stderr
    monkeypatch.delenv(hardware.CPU_CLASS_ENV)
    done = refusal(*train)
    assert done.returncode == 1 and helpers._forker.pid == second
    assert "--batch_size=512 is larger than the train split" in done.stderr, done.stderr


def test_helpshort_lists_the_tools_own_flags():
    result = cli("train", "--helpshort", timeout=120, fresh=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--batch_size: Global batch size" in result.stdout
    assert "--flagfile" not in result.stdout and "--verbosity" not in result.stdout   # absl's
    full = cli("train", "--helpfull", timeout=120, fresh=True)
    assert full.returncode == 0 and "--verbosity" in full.stdout and "--batch_size" in full.stdout


def test_sigterm_saves_a_checkpoint_first(tiny_data_dir, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-m", "alexnet_tf.cli.train", *QUICK, f"--data_dir={tiny_data_dir}",
         f"--model_dir={tmp_path}", "--epochs=100", "--checkpoint_steps=100000"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.time() + 180
        for line in process.stdout:
            if " step 2/" in line or time.time() > deadline:
                break
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=120)[0]
    finally:
        process.kill()
    assert process.returncode == 143                 # 128 + SIGTERM, as a shell reports it
    assert "SIGTERM: saved " in output and "run again with the same --model_dir to resume" in output
    assert [f for f in os.listdir(tmp_path) if f.startswith("ckpt-") and f.endswith(".index")]


def _get_json(url, deadline, ready=bool):
    """The JSON at `url` once `ready(it)`, polling until `deadline`; None if it never was."""
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                value = json.loads(response.read())
            if ready(value):
                return value
        except OSError:
            pass
        time.sleep(1)
    return None


def test_tensorboard_serves_the_runs_scalars_and_hparams(tiny_data_dir, tmp_path):
    logdir = tmp_path / "runs"
    model_dir = str(logdir / "run")
    assert cli("train", *QUICK, f"--data_dir={tiny_data_dir}", f"--model_dir={model_dir}",
               "--max_steps=2").returncode == 0
    port, = free_ports(1)
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}", "--host=127.0.0.1",
         f"--port={port}", "--reload_interval=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/data/plugin"
    try:
        deadline = time.time() + 90
        points = _get_json(f"{base}/scalars/scalars?run=run/validation&tag=top1_error", deadline)
        query = urllib.parse.quote(json.dumps({"experimentName": ""}))
        experiment = _get_json(f"{base}/hparams/experiment?request={query}", deadline,
                               lambda e: e.get("hparamInfos"))
        query = urllib.parse.quote(json.dumps({
            "experimentName": "", "startIndex": 0, "sliceSize": 10, "allowedStatuses": [
                "STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]}))
        groups = _get_json(f"{base}/hparams/session_groups?request={query}", deadline,
                           lambda g: g.get("sessionGroups"))
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert points, "TensorBoard never served the validation scalars"
    wall_time, step, value = points[-1]
    assert step == 2 and 0.0 <= value <= 1.0
    assert experiment and groups, "TensorBoard never served the run's hparams"
    names = {info["name"] for info in experiment["hparamInfos"]}
    assert {"learning_rate", "batch_size", "model.towers", "model.lrn", "mixed_precision"} <= names
    metrics = {(m["name"]["group"], m["name"]["tag"]) for m in experiment["metricInfos"]}
    assert ("validation", "top1_error") in metrics
    session = groups["sessionGroups"][0]
    assert session["hparams"]["batch_size"] == 8 and session["hparams"]["model.towers"] == 2
    assert session["hparams"]["mixed_precision"] == "float32"
    final = {(m["name"]["group"], m["name"]["tag"]): m["value"] for m in session["metricValues"]}
    assert final[("validation", "top1_error")] == pytest.approx(value)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


# Every path-shaped flag of every tool given something of the wrong kind. FILE is a file, DIR a
# directory, MISSING does not exist, UNDER_FILE is a path below a file (it cannot be made).
# (No permission cases: the suite may run as root, for whom every path is readable and writable.)
PATH_CASES = [
    ("train", ["--model_dir=FILE"],
     "--model_dir=FILE is a file, not a directory (give a directory)"),
    ("train", ["--model_dir=UNDER_FILE"], "--model_dir=UNDER_FILE cannot be made: FILE is a file, "
                                          "not a directory"),
    ("train", ["--model_dir=DIR/run", "--data_dir=FILE"], "--data_dir=FILE is a file, not a "
                                                          "directory (give a directory)"),
    ("summary", ["--model_dir=FILE"], "--model_dir=FILE is a file, not a directory"),
    ("evaluate", ["--model_dir=DIR,FILE"], "--model_dir=FILE is a file, not a directory"),
    ("evaluate", ["--saved_model=MISSING"], "--saved_model=MISSING does not exist"),
    ("evaluate", ["--model_dir=DIR", "--json=DIR"], "--json=DIR is a directory, not a file "
                                                    "(give a file's path)"),
    ("export", ["--model_dir=FILE"], "--model_dir=FILE is a file, not a directory"),
    ("export", ["--model_dir=DIR", "--export_base=FILE"], "--export_base=FILE is a file, not a "
                                                          "directory"),
    ("predict", ["--saved_model=MISSING", "x.jpg"], "--saved_model=MISSING does not exist"),
    ("predict", ["--model_dir=DIR", "--json=UNDER_FILE", "x.jpg"],
     "--json=UNDER_FILE cannot be made: FILE is a file, not a directory"),
    ("retrieve", ["--model_dir=DIR", "--index=DIR"], "--index=DIR is a directory, not a file"),
    ("retrieve", ["--model_dir=DIR", "--index=DIR/i.npz", "--output=DIR"],
     "--output=DIR is a directory, not a file"),
    ("figures", ["--model_dir=DIR", "--out_dir=FILE"], "--out_dir=FILE is a file, not a directory"),
    ("import_caffe", ["--model_dir=DIR/new", "--caffemodel=DIR"], "--caffemodel=DIR is a "
                                                                  "directory, not a file"),
    ("import_caffe", ["--model_dir=FILE"], "--model_dir=FILE is a file, not a directory"),
    ("study", ["--out_dir=FILE"], "--out_dir=FILE is a file, not a directory"),
    ("benchmark", ["--json=DIR"], "--json=DIR is a directory, not a file"),
    ("benchmark", ["--serving_model_dir=FILE"], "--serving_model_dir=FILE is a file, not a "
                                                "directory"),
    ("train", ["--flagfile=MISSING"], "--flagfile=MISSING cannot be opened (No such file or "
                                      "directory)"),
]


@pytest.mark.parametrize("tool,args,message", PATH_CASES,
                         ids=[f"{t}-{a[-1].split('=')[0] if '=' in a[-1] else a[-2]}-{i}"
                              for i, (t, a, _) in enumerate(PATH_CASES)])
def test_every_path_flag_of_the_wrong_kind_is_one_line(tool, args, message, tmp_path):
    (tmp_path / "FILE").write_text("a file")
    (tmp_path / "DIR").mkdir()
    names = {"UNDER_FILE": "FILE/run", "FILE": "FILE", "DIR": "DIR", "MISSING": "MISSING"}

    def place(text):
        return re.sub(r"\b(UNDER_FILE|FILE|DIR|MISSING)\b",
                      lambda m: str(tmp_path / names[m.group(1)]), text)
    result = refusal(tool, *[place(a) for a in args], timeout=120, cwd=str(tmp_path))
    name = command_name(tool)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: error: {place(message)}"), \
        result.stderr
    assert sorted(os.listdir(tmp_path)) == ["DIR", "FILE"] and not os.listdir(tmp_path / "DIR")


def test_a_refused_start_leaves_no_folder_it_made(tmp_path):
    """`alexnet-train --flagfile=flags/paper.cfg` without ImageNet once left an empty runs/paper/."""
    result = refusal("train", f"--model_dir={tmp_path / 'runs' / 'paper'}",
                     "--dataset=no_such_data", timeout=120)
    assert result.returncode == 1 and "unknown dataset 'no_such_data'" in result.stderr
    assert os.listdir(tmp_path) == []

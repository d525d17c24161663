"""alexnet-study (smoke preset), the per-class report, the one-GPU net and removed layers."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import figures, metrics
from alexnet_tf.analysis import evaluate, report, study
from alexnet_tf.data import input_pipeline, sources
from alexnet_tf.model.network import build_alexnet
from alexnet_tf.training.restore import restore_model
from alexnet_tf.training.rundir import RunDir
from helpers import cli

# The smoke study's fixture trains the rows whose numbers the tests below check (4 of 11, 12 s
# each): the baseline, the LRN claim's row, a row with another tower layout and one with a layer
# removed. The other seven change only the network (one full tower, conv4 or conv5 removed:
# counted by hand below) or the activation, pooling, dropout or PCA, whose networks test_models
# builds and whose configs the preset test below checks.
EXPECTED_RUNS = ("baseline", "no_lrn", "one_gpu", "no_conv3")


def run_cli_study(out, data_dir, *more):
    result = cli("study", f"--out_dir={out}", "--preset=smoke", f"--data_dir={data_dir}", *more,
                 timeout=900)
    return result


@pytest.fixture(scope="module")
def smoke_study(tiny_data_dir, tmp_path_factory):
    """The smoke study, run as a user runs it (its own process, whose memory is freed after)."""
    out = str(tmp_path_factory.mktemp("study"))
    result = run_cli_study(out, tiny_data_dir, f"--only={','.join(EXPECTED_RUNS)}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.load(open(os.path.join(out, "results.json")))
    return out, rows, result.stdout.splitlines()


def test_smoke_study_has_every_run_a_figure_and_a_table(smoke_study):
    out, rows, lines = smoke_study
    stored = json.load(open(os.path.join(out, "results.json")))
    assert [r["name"] for r in stored] == list(EXPECTED_RUNS)
    for row in stored:
        for key in ("top1_error", "top5_error", "top1_error_10crop", "top5_error_10crop",
                    "train_error", "top1_error_centre_same", "top5_error_centre_same"):
            assert 0.0 <= row[key] <= 1.0, (row["name"], key)
        assert row["steps"] == 1 and row["ten_crop_images"] == 8 and row["images_per_second"] > 0
    params = {r["name"]: r["params"] for r in stored}
    # Hand-computed at 10 classes: the two-tower net minus fc8's 4096 * 990 + 990.
    assert params["baseline"] == 60_965_224 - 990 * 4097
    assert params["one_gpu"] == 59_798_312 - 990 * 4097
    png = open(os.path.join(out, "figure1.png"), "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert tf.io.decode_png(png).shape[2] == 3
    table = open(os.path.join(out, "results.md")).read()
    assert "LRN lowers top-1 by 1.4%, top-5 by 1.2%" in table
    assert sum(line.startswith("| no_conv") for line in table.splitlines()) == 1
    assert any("study ETA" in line for line in lines)


def test_a_second_call_trains_nothing(smoke_study, tiny_data_dir, tmp_path):
    out, rows, _ = smoke_study
    checkpoints = sorted(os.path.join(root, f) for root, _, names in os.walk(out)
                         for f in names if f.endswith(".index"))
    before = {p: os.stat(p).st_mtime_ns for p in checkpoints}
    lines = []
    again = study.run_study(out, "smoke", seeds=(0,), only=EXPECTED_RUNS, data_dir=tiny_data_dir,
                            log=lines.append)
    assert f"study: 0 run(s) trained, {len(EXPECTED_RUNS)} recorded before" in lines[-1]
    assert [r["top1_error"] for r in again] == [r["top1_error"] for r in rows]
    assert {p: os.stat(p).st_mtime_ns for p in checkpoints} == before
    with pytest.raises(study.StudyError, match="holds a study with other settings"):
        study.run_study(out, "smoke", seeds=(0,), only=EXPECTED_RUNS, data_dir=tiny_data_dir,
                        threshold=0.1, log=lines.append)
    recipe = json.load(open(os.path.join(out, "study.json")))
    recipe["recipe"]["batch_size"] += 1                 # as if an older alexnet_tf started it
    other = os.path.join(str(tmp_path), "older")
    os.makedirs(other)
    json.dump(recipe, open(os.path.join(other, "study.json"), "w"))
    with pytest.raises(study.StudyError, match=r"other settings \(different recipe\)"):
        study.run_study(other, "smoke", seeds=(0,), data_dir=tiny_data_dir, log=lines.append)
    assert os.listdir(other) == ["study.json"]
    refused = run_cli_study(out, tiny_data_dir, "--only=baseline,no_such")
    assert refused.returncode == 1 and "alexnet-study: error: --only: no ablation no_such" in \
        refused.stderr


def test_the_cpu_presets_baseline_has_no_dropout_and_its_dropout_row_adds_the_papers():
    preset = study.PRESETS["cpu"]
    names = [a.name for a in preset.ablations()]
    assert len(names) == 11 and names[0] == "baseline"
    assert "dropout" in names and "no_dropout" not in names
    rates = {a.name: study.run_config(preset, a, 0, "/study").model.dropout_rate
             for a in preset.ablations()}
    assert rates.pop("dropout") == 0.5 and set(rates.values()) == {0.0}
    smoke = study.PRESETS["smoke"]
    assert [a.name for a in smoke.ablations()] == list(study.NAMES)
    configs = {a.name: study.run_config(smoke, a, 0, "/study") for a in smoke.ablations()}
    baseline = configs.pop("baseline")

    def differences(a, b):
        a, b = dataclasses.asdict(a), dataclasses.asdict(b)
        return {k for k in a if a[k] != b[k]}
    changed = {name: (differences(baseline, c) - {"model_dir"},
                      differences(baseline.model, c.model)) for name, c in configs.items()}
    assert changed["no_pca"] == ({"pca"}, set()) and configs["no_pca"].pca is False
    assert changed["tanh"] == ({"model"}, {"activation"})
    assert changed["pool_2x2"] == ({"model"}, {"pool_size"})         # the stride is 2 in both
    assert changed["no_dropout"] == ({"model"}, {"dropout_rate"})
    assert configs["tanh"].model.activation == "tanh"
    assert (configs["pool_2x2"].model.pool_size, configs["pool_2x2"].model.pool_stride) == (2, 2)
    assert configs["no_dropout"].model.dropout_rate == 0.0
    with pytest.raises(study.StudyError, match="the cpu study has baseline, tanh"):
        study.run_study("/nonexistent", "cpu", only=["no_dropout"])


def _row(name, top1, top5, to_threshold, inverted=False):
    return {"name": name, "seed": 0, "changed": name, "section": "s", "paper": "p",
            "top1_error": top1, "top5_error": top5, "top1_error_10crop": top1,
            "top5_error_10crop": top5 - 0.01, "train_error": top1 - 0.05, "steps": 374,
            "top1_error_centre_same": top1 + 0.02, "top5_error_centre_same": top5,
            "ten_crop_images": 200,
            "steps_to_threshold": to_threshold, "inverted": inverted}


def test_the_claims_compare_each_row_with_the_baseline_by_hand():
    table = study.results_markdown([
        _row("baseline", 0.30, 0.10, 100), _row("tanh", 0.33, 0.10, 250),
        _row("dropout", 0.40, 0.15, None, inverted=True), _row("no_lrn", 0.35, 0.12, 120)])
    assert "tanh took 2.5x the steps of ReLU to the threshold (250 against 100)" in table
    # The dropout row has the paper's choice: "without" is the baseline.
    assert ("training error 25.0 without dropout, 35.0 with; validation top-1 30.0 without, "
            "40.0 with; dropout did not reach the threshold in 374 steps, over 3.7x the 100 "
            "of no dropout") in table
    assert "| no_lrn (s) | p | +5.0 / +2.0 |" in table
    # 10-crop against the centre crop of the same 200 images: 30 - 32, 9 - 10.
    assert "| (the paper's table 1 uses 10 crops) | -2.0 / -1.0 (the same 200 images) |" in table
    inverted = study.results_markdown([_row("baseline", 0.30, 0.10, 100),
                                       _row("pca", 0.28, 0.09, 90, inverted=True)])
    assert "| pca (s) | p | +2.0 / +1.0 |" in inverted      # worse without the paper's choice


def _probabilities(run):
    """A run's validation softmaxes and labels, independently of the study and the report: its
    best checkpoint over the evaluation pipeline, through evaluate.probabilities."""
    model, config_run, _ = restore_model(run, "best")
    source = sources.open_source(config_run.config.dataset, config_run.config.data_dir)
    data = input_pipeline.eval_dataset(source, RunDir(run).normalization(config_run), 64)
    return evaluate.probabilities(model, data)


def test_the_studys_errors_are_its_models_counted_by_numpy(smoke_study):
    out, rows, _ = smoke_study
    row = next(r for r in rows if r["name"] == "baseline")
    probs, labels = _probabilities(os.path.join(out, "runs", "baseline_seed0"))
    rank = (probs > probs[np.arange(len(labels)), labels][:, None]).sum(axis=1)
    assert row["top1_error"] == pytest.approx(np.mean(rank >= 1), abs=1e-9)
    assert row["top5_error"] == pytest.approx(np.mean(rank >= 5), abs=1e-9)


def test_report_per_class_numbers_match_numpy(smoke_study, tmp_path):
    out, _, _ = smoke_study
    run = os.path.join(out, "runs", "baseline_seed0")
    folder = str(tmp_path / "report")
    _, rows = evaluate.evaluate_runs([run], report_dir=folder)
    probs, labels = _probabilities(run)
    predicted = probs.argmax(axis=1)
    stored = json.load(open(os.path.join(folder, "per_class.json")))
    for c, row in enumerate(stored["classes"]):
        mine = labels == c
        assert row["images"] == mine.sum()
        assert row["recall"] == pytest.approx((predicted[mine] == c).mean())
        assert row["top1_error"] == pytest.approx(1 - (predicted[mine] == c).mean())
        said = predicted == c
        assert row["precision"] == pytest.approx((labels[said] == c).mean() if said.any() else 0)
    assert np.sum(stored["confusion_matrix"]) == len(labels)
    assert open(os.path.join(folder, "confusion.png"), "rb").read()[:4] == b"\x89PNG"
    assert open(os.path.join(folder, "per_class.csv")).readline().strip() == \
        "class,images,top1_error,precision,recall"
    assert rows[-1]["top1_error"] == pytest.approx((predicted != labels).mean())


def test_most_confused_pairs_and_precision_by_hand():
    labels = [0, 0, 0, 1, 1, 2]
    predicted = [0, 1, 1, 1, 2, 0]
    matrix = metrics.confusion_matrix(predicted, labels, 3)
    assert matrix.tolist() == [[1, 2, 0], [0, 1, 1], [1, 0, 0]]
    rows = report.per_class(matrix, ["a", "b", "c"])
    assert [r["recall"] for r in rows] == pytest.approx([1 / 3, 1 / 2, 0])
    assert [r["precision"] for r in rows] == pytest.approx([1 / 2, 1 / 3, 0])
    assert metrics.most_confused(matrix, ["a", "b", "c"]) == [("a", "b", 2), ("b", "c", 1),
                                                            ("c", "a", 1)]


def test_chromatic_fraction_by_hand():
    grey = np.ones((11, 11, 3, 4))
    assert figures.chromatic_fraction(grey) == pytest.approx(0.0)
    red = np.zeros((11, 11, 3, 4))
    red[:, :, 0] = 1.0
    # Per pixel (1, 0, 0): grey 1/3; (2/3)^2 + 2 (1/3)^2 = 2/3 of the energy 1.
    assert figures.chromatic_fraction(red) == pytest.approx(2 / 3)


@pytest.mark.parametrize("remove, params", [
    # Hand-computed from the two-tower net's 60,965,224 (1000 classes):
    (("conv3",), 60_965_224 - 2 * (3 * 3 * 256 * 192 + 192) - 2 * 3 * 3 * 64 * 192),  # conv4 sees 128
    (("conv4",), 60_965_224 - 2 * (3 * 3 * 192 * 192 + 192)),
    (("conv5",), 60_965_224 - 2 * (3 * 3 * 192 * 128 + 128) + 2 * (6 * 6 * 128) * 2048),  # fc6 sees 384
])
def test_removing_a_middle_conv_layer_keeps_the_shapes_valid(remove, params):
    model = build_alexnet(devices=None, remove=remove)
    assert model.count_params() == params
    assert remove[0] + "_a" not in [layer.name for layer in model.layers]
    assert model(tf.zeros([1, 224, 224, 3])).shape == (1, 1000)


def test_the_papers_one_gpu_net():
    model = build_alexnet(devices=None, towers=1, half_width=True)
    widths = [model.get_layer(f"conv{i}").filters for i in range(1, 6)]
    assert widths == [48, 128, 192, 192, 256]                 # the paper's footnote
    assert model.get_layer("fc6").units == 4096
    # 11*11*3*48+48 + 5*5*48*128+128 + 3*3*128*192+192 + 3*3*192*192+192 + 3*3*192*256+256
    # + 6*6*256*4096+4096 + 4096*4096+4096 + 4096*1000+1000
    assert model.count_params() == 59_798_312


def test_the_studys_one_full_width_tower():
    ablation = next(a for a in study.PRESETS["smoke"].ablations() if a.name == "one_tower_full")
    model = build_alexnet(devices=None, **dict(ablation.model))
    assert [model.get_layer(f"conv{i}").filters for i in range(1, 6)] == [96, 256, 384, 384, 256]
    # The two-tower net's 60,965,224 plus the weights the towers' split left out: conv2, conv4
    # and conv5 see all maps of the layer below (5*5*48*256, 3*3*192*384, 3*3*192*256 more).
    assert model.count_params() == 60_965_224 + 5 * 5 * 48 * 256 + 3 * 3 * 192 * 384 + \
        3 * 3 * 192 * 256 == 62_378_344


def test_an_ensemble_of_the_baselines_seeds_averages_their_softmaxes(smoke_study, tiny_data_dir,
                                                                      tmp_path):
    out = str(tmp_path / "seeds")
    os.makedirs(os.path.join(out, "runs"))       # seed 0 is the smoke study's (recorded, read only)
    os.symlink(os.path.join(smoke_study[0], "runs", "baseline_seed0"),
               os.path.join(out, "runs", "baseline_seed0"))
    lines = []
    rows = study.run_study(out, "smoke", seeds=(0, 1), only=["baseline"], data_dir=tiny_data_dir,
                           log=lines.append)
    assert "study: 1 run(s) trained, 1 recorded before" in lines[-1]
    assert [(r["name"], r["seed"]) for r in rows] == [("baseline", 0), ("baseline", 1),
                                                     ("baseline_ensemble", None)]
    (a, labels), (b, labels_b) = (_probabilities(os.path.join(out, "runs", f"baseline_seed{s}"))
                                  for s in (0, 1))
    assert np.array_equal(labels, labels_b) and not np.allclose(a, b)    # two different nets
    mean = (a + b) / 2
    top5 = np.argsort(-mean, axis=1)[:, :5]
    ensemble = rows[-1]
    assert ensemble["top1_error"] == pytest.approx(np.mean(mean.argmax(axis=1) != labels))
    assert ensemble["top5_error"] == pytest.approx(
        np.mean([label not in best for label, best in zip(labels, top5)]))
    assert "| an ensemble of the baseline's seeds (6) |" in \
        open(os.path.join(out, "results.md")).read()

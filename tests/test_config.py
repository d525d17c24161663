"""The configuration declared once: flags derived from the fields, flagfiles, per-precision values."""

import dataclasses
import json
import typing
import os
import sys

import pytest
from absl import flags

from alexnet_tf import config
from alexnet_tf.config import ModelConfig, TrainConfig
from helpers import REPO, cli


@pytest.fixture
def flag_values():
    values = flags.FlagValues()
    config.define_flags(config.TrainConfig, values)
    config.define_flags(config.ModelConfig, values)
    return values


def _parse(values, *args):
    values(["prog", *args])
    return config.from_flags(TrainConfig, values)


def test_every_setting_has_one_flag_with_its_default_and_help(flag_values):
    for cls in (TrainConfig, ModelConfig):
        for field in dataclasses.fields(cls):
            if field.name in ("by_precision", "model"):
                continue
            name = field.metadata.get("flag") or field.name
            assert name in flag_values, name
            assert field.metadata["help"] in flag_values[name].help, name
            default = flag_values[name].default
            if field.name in config.PER_PRECISION:
                default = type(field.default)(default)
            elif isinstance(field.default, tuple):
                default = tuple(int(v) for v in default or ())
            assert default == field.default, name


def test_flags_give_the_config_the_fields_describe(flag_values):
    parsed = _parse(flag_values, "--model_dir=/tmp/r", "--mean=channel", "--towers_on=none",
                    "--lr_boundaries=30,60", "--batch_size=64,float32:32", "--epochs=14,float32:4",
                    "--towers=1", "--nopca", "--image_size=227")
    assert parsed.mean_mode == "channel" and parsed.pca is False
    assert parsed.lr_boundaries == (30, 60)
    assert parsed.model == ModelConfig(towers=1, devices="none", image_size=227)
    assert (parsed.batch_size, parsed.epochs) == (64, 14)
    assert sorted(parsed.by_precision) == [("float32", "batch_size", 32), ("float32", "epochs", 4)]
    assert parsed.model.build_kwargs()["devices"] is None
    # Untouched flags: the dataclass defaults.
    assert parsed.learning_rate == TrainConfig.learning_rate == 0.01


@pytest.mark.parametrize("args", [["--towers=3"], ["--image_size=225"], ["--learning_rate=0"],
                                  ["--batch_size=64,float32:0"], ["--profile_steps=5,3"],
                                  ["--dropout_rate=1.0"]])
def test_bad_values_are_refused_by_the_flags(flag_values, args):
    with pytest.raises(flags.IllegalFlagValueError):
        _parse(flag_values, "--model_dir=x", *args)


def test_the_quickstart_flagfile_still_parses(flag_values):
    parsed = _parse(flag_values, f"--flagfile={os.path.join(REPO, 'flags', 'quickstart.cfg')}")
    assert parsed.model_dir == "runs/quickstart" and parsed.model.kernel_init == "he"
    for name in os.listdir(os.path.join(REPO, "flags")):
        flag_values.unparse_flags()
        _parse(flag_values, f"--flagfile={os.path.join(REPO, 'flags', name)}", "--model_dir=x")


def test_older_run_configs_load():
    older = {"model_dir": "r", "epochs": 14, "epochs_by_precision": [["float32", 4]],
             "lr_boundaries": [], "profile_steps": [],
             "model": {"towers": 2, "lrn": True, "pool_size": 3, "pool_stride": 2,
                       "activation": "relu", "kernel_init": "he", "bias_init": "zeros",
                       "dropout_rate": 0.0, "devices": None}}
    loaded = TrainConfig.from_dict(older)
    assert loaded.for_precision("float32").epochs == 4 and loaded.model.devices == "none"
    assert loaded.model.image_size == 224
    with pytest.raises(ValueError, match="unknown settings colour"):
        TrainConfig.from_dict({"model_dir": "r", "colour": 1})


# A value of the wrong type for each kind of setting, chosen by hand from the field's declared
# type (a run_config.json edited or damaged by hand).
WRONG = {int: ["3", 2.5, True, None], float: ["0.1", True, None, float("nan")], bool: [1, "yes"],
         str: [3, None, ["a"]], "tuple": ["conv3", [1.5], 5]}


def test_a_run_config_with_a_value_of_the_wrong_type_or_range_is_refused_naming_it():
    valid = TrainConfig(model_dir="r").to_dict()
    cases = 0
    for section, cls in ((None, TrainConfig), ("model", ModelConfig)):
        for field in dataclasses.fields(cls):
            if field.name in ("model", "by_precision"):
                continue
            kind = field.type
            if typing.get_origin(kind) is typing.Union:
                kind = next(k for k in typing.get_args(kind) if k is not type(None))
            kind = "tuple" if typing.get_origin(kind) is tuple else kind
            for value in WRONG[kind]:
                if value is None and (field.default is None or field.name == "devices"):
                    continue                          # devices: None is older runs' "none"
                document = json.loads(json.dumps(valid))
                (document[section] if section else document)[field.name] = value
                with pytest.raises(ValueError, match=f"^{field.name} "):
                    TrainConfig.from_dict(document)
                cases += 1
    assert cases > 100
    for name, value in (("batch_size", 0), ("momentum", 1.5), ("mean", "median")):
        document = dict(valid, **{name if name != "mean" else "mean_mode": value})
        with pytest.raises(ValueError, match="must"):
            TrainConfig.from_dict(document)
    with pytest.raises(ValueError, match="by_precision entry"):
        TrainConfig.from_dict(dict(valid, by_precision=[["float64", "epochs", 3]]))


def test_helpfull_lists_every_flag_with_its_help():
    result = cli("train", "--helpfull", timeout=120, fresh=True)
    for cls in (TrainConfig, ModelConfig):
        for field in dataclasses.fields(cls):
            if "help" in field.metadata:
                name = field.metadata.get("flag") or field.name
                shown = f"--[no]{name}" if field.type is bool else f"--{name}"
                assert shown in result.stdout, name
    assert "PRECISION:VALUE entries" in result.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

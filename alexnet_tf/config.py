"""A training run's configuration, declared once.

Each setting is one dataclass field: its type, its default, and (in its
metadata) its flag's help text, choices and check. `define_flags` derives the
absl flags from the fields and `from_flags` the config from the flags, so a
setting has no second declaration. `TrainConfig` holds the run; its model is a
typed `ModelConfig`.

Four settings may differ by compute precision (`PER_PRECISION`): a flag value
such as `--epochs=14,float32:4` means 14 epochs, but 4 where the run computes
in float32 (after `--mixed_precision=auto` chose it). The config keeps the
default in the field and the exceptions in `by_precision`;
`for_precision(p)` gives the settings a run in precision `p` uses.

Example:

    config = TrainConfig(model_dir="runs/a", epochs=14, model=ModelConfig(towers=1))
    config.for_precision("float32").epochs
"""

import dataclasses
import math
import typing
from typing import Optional

from alexnet_tf import errors, paper

# --- The choices, declared once (the modules that implement them import them from here) ----
# Compute precisions (variables stay float32), and what --mixed_precision accepts.
FLOAT32, BFLOAT16, FLOAT16 = "float32", "bfloat16", "float16"
PRECISIONS = (FLOAT32, BFLOAT16, FLOAT16)
MIXED_PRECISIONS = ("auto",) + PRECISIONS + ("none",)
# The network (models.build_alexnet).
KERNEL_INITS = ("paper", "he", "glorot")
BIAS_INITS = ("paper", "zeros")
ACTIVATIONS = ("relu", "tanh")
IMAGE_SIZES = {224: paper.CONV1_PADDING, 227: 0}  # input size -> conv1 zero padding
REMOVABLE = ("conv3", "conv4", "conv5")    # the middle conv layers (all 13x13 in, 13x13 out)
# The layers with weights, by base name (with two towers each but fc8 is two layers, `_a`/`_b`).
WEIGHTED_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
POOL_ROUNDINGS = ("floor", "ceil")         # layers.PlacedMaxPooling2D
SCHEDULES = ("plateau", "step", "cosine")  # schedule.LearningRateSchedule
# Data and preprocessing.
BUILT_IN = "alexnet_shapes"                # the built-in offline dataset (shapes_dataset)
MEAN_MODES = ("image", "channel")          # dataset_stats.Normalization
# "none": the paper's raw mean-subtracted pixels (0..255 scale); "std": divided by the
# training set's per-channel standard deviation (unit scale, for He/Glorot inits).
INPUT_SCALES = ("none", "std")
# How an image becomes 256x256: the paper's (section 2), or Caffe's (its ImageNet LMDBs were
# made with convert_imageset --resize_height=256 --resize_width=256: bilinear, aspect ignored).
SHORTER_SIDE, SQUASH = "shorter_side", "squash"
RESIZES = (SHORTER_SIDE, SQUASH)
# Images above this many megapixels are refused before decoding (a 100-megapixel RGB image
# decodes to 300 MB; a 30000x30000 PNG of 2.6 MB would need 2.7 GB).
MAX_MEGAPIXELS = 100.0


def setting(default, help, *, flag=None, choices=None, check=None, message=None):
    """A config field with its flag's declaration.

    Args:
      default: The default value (a tuple for list flags).
      help: The flag's help text.
      flag: The flag's name, when it is not the field's.
      choices: The allowed values (an enum flag for strings).
      check: A predicate on the field's value; `message` says what is wrong.
    """
    return dataclasses.field(default=default, metadata=dict(
        help=help, flag=flag, choices=choices, check=check, message=message))


@dataclasses.dataclass
class ModelConfig:
    """The network's options (`models.build_alexnet`'s keyword arguments)."""
    towers: int = setting(paper.NUM_TOWERS, "1 or 2 towers (2 = the paper's two-GPU split).",
                          choices=(1, 2))
    lrn: bool = setting(True, "Local response normalisation after conv1 and conv2 (section 3.3).")
    lrn_k: float = setting(paper.LRN_K, "LRN's k (the paper: 2; Caffe's bvlc_alexnet: 1).",
                           check=lambda v: v > 0, message="must be > 0")
    lrn_alpha: float = setting(paper.LRN_ALPHA, "LRN's alpha, multiplying the plain sum of squares "
                               "(the paper: 1e-4; Caffe divides its alpha by n=5: its 1e-4 is "
                               "2e-5 here).", check=lambda v: v >= 0, message="must be >= 0")
    lrn_across_towers: bool = setting(False, "LRN windows cross the tower boundary (Caffe's "
                                      "norm1/norm2 see all 96/256 maps); the paper's GPUs "
                                      "normalised within each tower.")
    pool_size: int = setting(paper.POOL_SIZE, "Max-pool window (3 = overlapping, section 3.4).",
                             check=lambda v: v >= 1, message="must be >= 1")
    pool_stride: int = setting(paper.POOL_STRIDE, "Max-pool stride.",
                               check=lambda v: v >= 1, message="must be >= 1")
    pool_rounding: str = setting("floor", "Max-pool output size: floor (windows that fit) or ceil "
                                 "(Caffe: a last window clipped at the edge).",
                                 choices=POOL_ROUNDINGS)
    activation: str = setting("relu", "Nonlinearity (section 3.1).", choices=ACTIVATIONS)
    half_width: bool = setting(False, "With --towers=1: the paper's one-GPU comparator (section "
                               "3.2): half the kernels in conv1-4 (48/128/192/192), conv5 256 "
                               "and fc 4096 (its footnote).")
    remove: typing.Tuple[str, ...] = setting(
        (), "Leave out these middle conv layers (conv3, conv4, conv5; section 1's claim).",
        check=lambda v: set(v) <= set(REMOVABLE), message=f"must name layers among "
        f"{','.join(REMOVABLE)}")
    kernel_init: str = setting("paper", "Weight init: paper = N(0, 0.01) (section 5), he, glorot.",
                               choices=KERNEL_INITS)
    bias_init: str = setting("paper", "Bias init: paper = 1 in conv2/4/5, fc6/7, else 0 "
                             "(section 5); or zeros.", choices=BIAS_INITS)
    dropout_rate: float = setting(paper.DROPOUT_RATE, "Dropout after fc6 and fc7 (section 4.2).",
                                  check=lambda v: 0.0 <= v < 1.0, message="must be in [0, 1)")
    image_size: int = setting(paper.IMAGE_SIZE, "Input side: 224 (the paper; conv1 zero-pads 2) "
                              "or 227 (no padding, as Caffe).", choices=tuple(IMAGE_SIZES))
    devices: str = setting("auto", "Tower devices: 'auto' (two GPUs if present), 'none', or "
                           "'DEV_A,DEV_B' such as '/GPU:0,/GPU:1'.", flag="towers_on")

    def placement(self):
        """`devices` as `models.resolve_tower_devices` takes it: 'none' -> None (no placement)."""
        return None if str(self.devices).lower() == "none" else self.devices

    def build_kwargs(self):
        """`build_alexnet`'s keyword arguments (`devices` as `placement` gives it)."""
        return {**dataclasses.asdict(self), "devices": self.placement()}


# Settings that change how long, how loudly or where a run goes, not what it is: a resume may
# change them freely (`recipe_differences`). --epochs too, unless the schedule depends on it.
FREE_SETTINGS = ("model_dir", "data_dir", "max_steps", "checkpoint_steps", "keep_checkpoints",
                 "log_steps", "profile_steps", "histograms", "allow_changes", "devices")
SCHEDULES_OF_EPOCHS = ("cosine",)       # the rate at each step depends on the total steps


def recipe_setting_names():
    """The flag names of the settings that make a run what it is."""
    fields = [f for cls in (TrainConfig, ModelConfig) for f in _setting_fields(cls)]
    return [_flag_name(f) for f in fields if f.name not in FREE_SETTINGS]


def recipe_differences(before, after):
    """[(flag name, "--flag: A in the run, B now"), ...] where two TrainConfigs' recipes differ.

    Per-precision settings compare as the flag's whole value (e.g. 14,float32:4).
    """
    free = set(FREE_SETTINGS)
    if after.lr_schedule not in SCHEDULES_OF_EPOCHS and before.lr_schedule == after.lr_schedule:
        free.add("epochs")
    out = []
    for settings_before, settings_after, cls in ((before, after, TrainConfig),
                                                 (before.model, after.model, ModelConfig)):
        for field in _setting_fields(cls):
            if field.name in free:
                continue
            old, new = (_flag_text(s, field) for s in (settings_before, settings_after))
            if old != new:
                name = _flag_name(field)
                out.append((name, f"--{name}: {old} in the run, {new} now"))
    return out


def _flag_text(settings, field):
    """A setting's value as its flag is written (per-precision entries included)."""
    value = getattr(settings, field.name)
    if isinstance(value, tuple):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    entries = [f"{p}:{v}" for p, name, v in getattr(settings, "by_precision", ())
               if name == field.name]
    return ",".join([text] + entries) if entries else text


def frozen_layers(train_layers, freeze):
    """The base layer names (conv1 ... fc8) that do not train, from --train_layers / --freeze."""
    if train_layers:
        return tuple(name for name in WEIGHTED_LAYERS if name not in train_layers)
    return tuple(freeze)


PER_PRECISION = ("epochs", "batch_size", "learning_rate", "lr_warmup_epochs")
CLASS_WEIGHTS = ("none", "balanced")        # metrics.balanced_class_weights
AUGMENTS = ("paper", "randaugment")          # input_pipeline.train_dataset


def lr_multipliers_problem(entries):
    """None, or what is wrong with --lr_multipliers entries ("conv1:0.1", ...)."""
    try:
        lr_multiplier_map(entries)
    except ValueError as error:
        return str(error)
    return None


def lr_multiplier_map(entries):
    """{layer base name: factor} from --lr_multipliers entries such as ("conv1:0.1", "fc8:10")."""
    found = {}
    for entry in entries:
        layer, _, factor = str(entry).partition(":")
        if layer.strip() not in WEIGHTED_LAYERS:
            raise ValueError(f"{entry!r}: {layer.strip()!r} is not a layer among "
                             f"{','.join(WEIGHTED_LAYERS)}")
        try:
            value = float(factor)
        except ValueError:
            raise ValueError(f"{entry!r}: give LAYER:FACTOR, e.g. conv1:0.1") from None
        if not value >= 0:
            raise ValueError(f"{entry!r}: the factor must be >= 0")
        found[layer.strip()] = value
    return found


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on (alexnet-train's flags, one to one)."""
    model_dir: str = setting(None, "Where checkpoints, TensorBoard logs and run files go; running "
                             "again on the same dir resumes.",
                             check=lambda v: v is None or bool(v.strip()),
                             message="must name a folder, e.g. runs/NAME")
    # Data.
    dataset: str = setting(BUILT_IN, "A TFDS dataset name (alexnet_shapes is built in; "
                           "imagenet2012 from TFDS' manual dir) or image_folder:ROOT "
                           "(ROOT/<split>/<class>/*.jpg).")
    data_dir: Optional[str] = setting(None, "TFDS data_dir (default: $TFDS_DATA_DIR or "
                                      "~/tensorflow_datasets). The built-in dataset is generated "
                                      "here on first use.")
    train_split: str = setting("train", "Training split.")
    eval_split: str = setting("validation", "Evaluation split.")
    mean_mode: str = setting("image", "Subtract the training set's mean image (the paper) or "
                             "per-channel mean.", flag="mean", choices=MEAN_MODES)
    input_scale: str = setting("none", "none: raw mean-subtracted pixels (the paper); std: also "
                               "divide by the per-channel std (for --kernel_init=he/glorot).",
                               choices=INPUT_SCALES)
    resize: str = setting(SHORTER_SIDE, "How images become 256x256: shorter_side "
                          "(the paper: shorter side to 256, the central 256x256) or squash (Caffe: "
                          "both sides to 256, the aspect ratio not kept).",
                          choices=RESIZES)
    pca: bool = setting(True, "PCA colour augmentation (section 4.1).")
    max_megapixels: float = setting(MAX_MEGAPIXELS, "image_folder: images larger "
                                    "than this (read from their headers) are skipped, never "
                                    "decoded.", check=lambda v: v > 0, message="must be > 0")
    # The recipe.
    batch_size: int = setting(paper.BATCH_SIZE, "Global batch size (section 5: 128).",
                              check=lambda v: v >= 1,
                              message="must be a batch size >= 1, e.g. 128, or 64,float32:32")
    epochs: int = setting(paper.EPOCHS, "Epochs (section 5: about 90).", check=lambda v: v >= 1,
                          message="must be a number of epochs, e.g. 90, or 14,float32:4")
    max_steps: Optional[int] = setting(None, "Stop after this many steps in all (cuts a run "
                                       "short).", check=lambda v: v is None or v >= 1,
                                       message="must be >= 1")
    learning_rate: float = setting(paper.LEARNING_RATE, "Initial learning rate (0.01).",
                                   check=lambda v: v > 0,
                                   message="must be > 0, e.g. 0.01, or 0.004,float32:0.005")
    momentum: float = setting(paper.MOMENTUM, "Momentum (0.9).",
                              check=lambda v: 0 <= v < 1, message="must be in [0, 1)")
    weight_decay: float = setting(paper.WEIGHT_DECAY, "Weight decay inside the momentum, kernels "
                                  "only (0.0005).", check=lambda v: v >= 0, message="must be >= 0")
    lr_schedule: str = setting("plateau", "plateau: /10 when validation error stops improving (the "
                               "paper); step: /10 at --lr_boundaries epochs; cosine: "
                               "--lr_warmup_epochs of linear warm-up, then a half cosine to 0 at "
                               "the last step (not the paper; for short runs).", choices=SCHEDULES)
    lr_patience: int = setting(1, "plateau: epochs without improvement before dividing.")
    lr_max_decays: int = setting(paper.LR_MAX_DECAYS, "plateau: divide at most this often.")
    lr_boundaries: typing.Tuple[int, ...] = setting(
        (), "step: epochs after which the rate is divided by 10.",
        check=lambda v: all(b >= 0 for b in v), message="must be epochs, e.g. 30,60,80")
    lr_warmup_epochs: float = setting(0.0, "cosine: epochs of linear warm-up (may be a fraction).",
                                      check=lambda v: v >= 0,
                                      message="must be >= 0, e.g. 1, or 1,float32:0.5")
    # Precision-specific values of the settings in PER_PRECISION: ((precision, name, value), ...).
    by_precision: tuple = ()
    # Fine-tuning.
    init_from: Optional[str] = setting(None, "Start from another run's weights: a run directory "
                                       "(alexnet-train's or alexnet-import's; its best checkpoint) "
                                       "or a checkpoint in one (DIR/ckpt-N). Variables whose name "
                                       "and shape match are loaded; fc8 is new when the class "
                                       "count differs. The network options are the source's.")
    source_stats: bool = setting(True, "With --init_from: use the source's statistics (mean, PCA) "
                                 "and preprocessing (--mean, --input_scale, --resize), which its "
                                 "features expect; --nosource_stats: this dataset's and this "
                                 "run's flags.")
    train_layers: typing.Tuple[str, ...] = setting(
        (), "Train only these layers (e.g. fc8, or fc6,fc7,fc8); the others are frozen: no "
        "gradient, no momentum, no weight decay.", check=lambda v: set(v) <= set(WEIGHTED_LAYERS),
        message=f"must name layers among {','.join(WEIGHTED_LAYERS)}")
    freeze: typing.Tuple[str, ...] = setting(
        (), "Freeze these layers (e.g. conv1,conv2,conv3); the others train. Not with "
        "--train_layers.", check=lambda v: set(v) <= set(WEIGHTED_LAYERS),
        message=f"must name layers among {','.join(WEIGHTED_LAYERS)}")
    # Fine-tuning practice beyond the paper (docs/PRETRAINED.md); each off by default.
    augment: str = setting("paper", "paper: section 4.1's crops, flips and PCA colour; "
                           "randaugment: also RandAugment's operations on each image first "
                           "(not the paper; --randaugment_ops, --randaugment_magnitude).",
                           choices=AUGMENTS)
    randaugment_ops: int = setting(2, "--augment=randaugment: operations an image.",
                                   check=lambda v: v >= 1, message="must be >= 1")
    randaugment_magnitude: float = setting(9.0, "--augment=randaugment: magnitude, 0-30 (the "
                                           "RandAugment paper's scale).",
                                           check=lambda v: 0 <= v <= 30,
                                           message="must be in [0, 30]")
    mixup: float = setting(0.0, "MixUp's alpha (e.g. 0.2): each training batch mixed with itself "
                           "reversed by lam ~ Beta(alpha, alpha), the loss mixed alike; 0: off.",
                           check=lambda v: v >= 0, message="must be >= 0")
    cutmix: float = setting(0.0, "CutMix's alpha (e.g. 1.0): a box of each training image "
                            "replaced by its partner's, the loss mixed by area; with --mixup too, "
                            "each batch takes one of the two; 0: off.",
                            check=lambda v: v >= 0, message="must be >= 0")
    label_smoothing: float = setting(0.0, "Cross-entropy against (1 - e) x the label's one-hot "
                                     "+ e / classes instead of the one-hot (not the paper).",
                                     check=lambda v: 0.0 <= v < 1.0, message="must be in [0, 1)")
    class_weights: str = setting("none", "none (the paper), or balanced: an image of class c "
                                 "weighs N / (classes x N_c) in the loss, N_c counted in the "
                                 "training split.", choices=CLASS_WEIGHTS)
    ema: float = setting(0.0, "Decay of an exponential moving average of the weights, e.g. "
                         "0.999 (0: off). Validation, the best checkpoint, evaluation and exports "
                         "use the averaged weights; training goes on with its own.",
                         check=lambda v: 0.0 <= v < 1.0, message="must be in [0, 1)")
    lr_multipliers: typing.Tuple[str, ...] = setting(
        (), "LAYER:FACTOR,... per-layer learning-rate factors, e.g. conv1:0.1,fc8:10 (a layer's "
        "update is the paper's with the rate times its factor; 0 leaves it as it is).",
        check=lambda v: lr_multipliers_problem(v) is None,
        message="must be LAYER:FACTOR entries, e.g. conv1:0.1,fc8:10, with a layer among "
        f"{','.join(WEIGHTED_LAYERS)} and a factor >= 0")
    unfreeze_at: int = setting(0, "With --train_layers or --freeze: from this epoch on (counted "
                               "from 1) every layer trains; before it, only those (0: never).",
                               check=lambda v: v >= 0, message="must be an epoch >= 1, or 0")
    seed: int = setting(0, "Seed of the initialisation, data order and augmentation.")
    deterministic: bool = setting(False, "Deterministic ops (slower; same seed, same run).")
    # How it runs.
    mixed_precision: str = setting(
        "auto", "Compute precision; variables stay float32. auto: bfloat16 where the hardware "
        "computes it natively (CPUs with avx512_bf16/amx_bf16, GPUs of compute capability 8.0+, "
        "TPUs), float16 with loss scaling on GPUs of compute capability 7.x, float32 otherwise. "
        "none = float32.", choices=MIXED_PRECISIONS)
    jit_compile: str = setting("auto", "XLA-compile the train step. auto: on where it measured "
                               "faster (float32 on AVX2 CPUs without AVX-512), off elsewhere "
                               "(docs/BENCHMARKS.md).", choices=("auto", "true", "false"))
    checkpoint_steps: int = setting(1000, "Also checkpoint every this many steps.",
                                    check=lambda v: v >= 1, message="must be >= 1")
    keep_checkpoints: int = setting(3, "Keep the last this many checkpoints (+ the best).",
                                    check=lambda v: v >= 1, message="must be >= 1")
    log_steps: int = setting(20, "Progress line and train scalars every this many steps.",
                             check=lambda v: v >= 1, message="must be >= 1")
    profile_steps: typing.Tuple[int, ...] = setting(
        (), "START,STOP: a TensorBoard profiler trace of these steps.",
        check=lambda v: not v or (len(v) == 2 and 0 <= v[0] < v[1]),
        message="must be START,STOP with START < STOP")
    histograms: bool = setting(False, "Weight histograms in TensorBoard every epoch.")
    allow_changes: typing.Tuple[str, ...] = setting(
        (), "Resuming: accept these settings' changes (e.g. learning_rate,epochs); a resume that "
        "changes any other setting of the run's recipe is refused.",
        check=lambda v: set(v) <= set(recipe_setting_names()),
        message="must name settings of the recipe, e.g. learning_rate,epochs")
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)

    def validate(self):
        """Refuses settings that cannot work together (one-line `errors.ConfigError`)."""
        if self.train_layers and self.freeze:
            raise errors.ConfigError("give --train_layers (what trains) or --freeze (what does "
                                     "not), not both")
        if self.unfreeze_at and not (self.train_layers or self.freeze):
            raise errors.ConfigError(f"--unfreeze_at={self.unfreeze_at} unfreezes the layers "
                                     "that --train_layers or --freeze leave out: give one of them")

    def for_precision(self, precision):
        """The settings of a run computing in `precision`: its `by_precision` entries applied."""
        changes = {name: value for p, name, value in self.by_precision if p == precision}
        return dataclasses.replace(self, **changes, by_precision=())

    @property
    def image_size(self):
        """The model's input side, which the pipelines crop to (224, or 227)."""
        return self.model.image_size

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """The config `to_dict` gave (JSON lists back to tuples; older runs' names upgraded)."""
        values = dict(values)
        if "epochs_by_precision" in values:         # older runs: only --epochs per precision
            values["by_precision"] = [(p, "epochs", n)
                                      for p, n in values.pop("epochs_by_precision")]
        model = dict(values.pop("model", None) or {})
        if model.get("devices", "auto") is None:
            model["devices"] = "none"
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known) + sorted(
            set(model) - {f.name for f in dataclasses.fields(ModelConfig)})
        if unknown:
            raise ValueError(f"unknown settings {', '.join(unknown)}")
        for fields, found in ((dataclasses.fields(cls), values),
                              (dataclasses.fields(ModelConfig), model)):
            for field in fields:
                if isinstance(field.default, tuple) and isinstance(found.get(field.name), list):
                    found[field.name] = tuple(tuple(v) if isinstance(v, list) else v
                                              for v in found[field.name])
        config = cls(**values, model=ModelConfig(**model))
        problem = config.problem()
        if problem:
            raise ValueError(problem)
        return config

    def problem(self):
        """None, or the first setting whose value a run cannot have (its type, choices, check).

        Flags are checked by their parser; this checks a config read from a file.
        """
        for settings, cls in ((self, TrainConfig), (self.model, ModelConfig)):
            for field in _setting_fields(cls):
                value = getattr(settings, field.name)
                problem = None if _fits(value, field.type) else "has the wrong type"
                problem = problem or check(cls, field.name, value)
                if problem:
                    return f"{field.name} {value!r} {problem}"
        for entry in self.by_precision:
            if not (isinstance(entry, tuple) and len(entry) == 3 and entry[0] in PRECISIONS
                    and entry[1] in PER_PRECISION):
                return f"by_precision entry {entry!r} is not (precision, setting, value)"
            field = next(f for f in dataclasses.fields(TrainConfig) if f.name == entry[1])
            if not _fits(entry[2], field.type) or check(TrainConfig, entry[1], entry[2]):
                return f"by_precision entry {entry!r} has a value {entry[1]} cannot have"
        return None


def _fits(value, kind):
    """Whether `value` (read from JSON) has the type `kind` a field declares."""
    if typing.get_origin(kind) is typing.Union:                      # Optional[X]
        return any(_fits(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if typing.get_origin(kind) is tuple:                             # Tuple[X, ...]
        return isinstance(value, tuple) and all(_fits(v, typing.get_args(kind)[0]) for v in value)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    return isinstance(value, kind)


# --- Flags -------------------------------------------------------------------


def parse_per_precision(name, text, kind):
    """(default, ((precision, value), ...)) of a value such as "14" or "14,float32:4".

    A plain number is every run's value; "PRECISION:VALUE" entries give the value
    of a run that computes in that precision.
    """
    default, by_precision = None, []
    for part in str(text).split(","):
        precision, _, number = part.strip().rpartition(":")
        try:
            value = kind(number.strip())
        except ValueError:
            raise ValueError(f"--{name}={text}: {part.strip()!r} is not a number (write e.g. 14, "
                             "or 14,float32:4)") from None
        if not precision:
            if default is not None:
                raise ValueError(f"--{name}={text} gives two default values; give one plain "
                                 "number")
            default = value
        elif precision.strip() not in PRECISIONS:
            raise ValueError(f"--{name}={text}: {precision.strip()!r} is not a precision (one of "
                             f"{', '.join(PRECISIONS)})")
        else:
            by_precision.append((precision.strip(), value))
    if default is None:
        raise ValueError(f"--{name}={text} needs a plain number for the other precisions, e.g. "
                         "14,float32:4")
    return default, tuple(by_precision)


def _flag_name(field):
    return field.metadata.get("flag") or field.name


def _base_type(field):
    kind = field.type
    if typing.get_origin(kind) is typing.Union:      # Optional[X]
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    return kind


def _setting_fields(cls):
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def check(cls, name, value):
    """None if `value` is a valid value of field `name` of `cls`, else what is wrong (one line)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    meta = field.metadata
    if meta.get("choices") is not None and value not in meta["choices"]:
        return f"must be one of {', '.join(str(c) for c in meta['choices'])}"
    if meta.get("check") is not None and not meta["check"](value):
        return meta["message"]
    return None


def define_flags(cls, flag_values=None, require_model_dir=True):
    """Defines one absl flag per setting of `cls` (nested configs are defined separately).

    `require_model_dir=False`: --model_dir is optional (a tool that only reads a flagfile).
    """
    from absl import flags
    flag_values = flags.FLAGS if flag_values is None else flag_values
    for field in _setting_fields(cls):
        name, meta, kind = _flag_name(field), field.metadata, _base_type(field)
        help_text, default = meta["help"], field.default
        if field.name in PER_PRECISION:
            help_text += (" PRECISION:VALUE entries set the value of a run computing in that "
                          "precision, e.g. 14,float32:4: 14, but 4 where --mixed_precision=auto "
                          "chose float32.")
            flags.DEFINE_string(name, str(default), help_text, flag_values=flag_values)
            flags.register_validator(name, _per_precision_validator(cls, field),
                                     f"--{name} {meta['message']}.", flag_values=flag_values)
            continue
        if kind is bool:
            flags.DEFINE_boolean(name, default, help_text, flag_values=flag_values)
        elif kind is str and meta.get("choices"):
            flags.DEFINE_enum(name, default, list(meta["choices"]), help_text,
                              flag_values=flag_values)
        elif kind is str:
            flags.DEFINE_string(name, default, help_text, flag_values=flag_values,
                                required=field.name == "model_dir" and require_model_dir)
        elif kind is int:
            flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
        elif kind is float:
            flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
        else:                                         # a tuple
            flags.DEFINE_list(name, [str(v) for v in default], help_text,
                              flag_values=flag_values)
        if meta.get("check") or (meta.get("choices") and kind is not str):   # enums check
            message = meta.get("message") or "must be one of " + ", ".join(     # themselves
                str(c) for c in meta["choices"])
            flags.register_validator(name, _validator(cls, field), f"--{name} {message}.",
                                     flag_values=flag_values)


def _flag_value(field, raw):
    kind = _base_type(field)
    if kind not in (bool, str, int, float) and raw is not None:     # list flag -> a tuple
        element = typing.get_args(kind)[0]
        return tuple(element(v.strip()) for v in raw)
    return raw


def _validator(cls, field):
    def valid(raw):
        try:
            return check(cls, field.name, _flag_value(field, raw)) is None
        except ValueError:
            return False
    return valid


def _per_precision_validator(cls, field):
    kind = _base_type(field)

    def valid(raw):
        from absl import flags
        try:
            default, by_precision = parse_per_precision(_flag_name(field), raw, kind)
        except ValueError as error:                  # its own message: the part that is wrong
            raise flags.ValidationError(str(error)) from None
        return all(check(cls, field.name, v) is None for v in [default] +
                   [v for _, v in by_precision])
    return valid


def from_flags(cls, flag_values=None):
    """The `cls` config the flags describe (nested configs from their own flags)."""
    from absl import flags
    flag_values = flags.FLAGS if flag_values is None else flag_values
    values, by_precision = {}, []
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(field.type):
            values[field.name] = from_flags(field.type, flag_values)
        elif "help" not in field.metadata:
            continue
        elif field.name in PER_PRECISION:
            values[field.name], entries = parse_per_precision(
                _flag_name(field), flag_values[_flag_name(field)].value, _base_type(field))
            by_precision += [(p, field.name, v) for p, v in entries]
        else:
            values[field.name] = _flag_value(field, flag_values[_flag_name(field)].value)
    if by_precision:
        values["by_precision"] = tuple(by_precision)
    return cls(**values)

"""Model flags, defined once and shared by every CLI that builds an AlexNet."""

from absl import flags

from alexnet_tf import models, paper

flags.DEFINE_integer("towers", paper.NUM_TOWERS, "1 or 2 towers (2 = the paper's two-GPU split).")
flags.DEFINE_boolean("lrn", True, "Local response normalisation after conv1 and conv2 (section 3.3).")
flags.DEFINE_integer("pool_size", paper.POOL_SIZE, "Max-pool window (3 = overlapping, section 3.4).")
flags.DEFINE_integer("pool_stride", paper.POOL_STRIDE, "Max-pool stride.")
flags.DEFINE_enum("activation", "relu", models.ACTIVATIONS, "Nonlinearity (section 3.1).")
flags.DEFINE_enum("kernel_init", "paper", models.KERNEL_INITS,
                  "Weight init: paper = N(0, 0.01) (section 5), he, glorot.")
flags.DEFINE_enum("bias_init", "paper", models.BIAS_INITS,
                  "Bias init: paper = 1 in conv2/4/5, fc6/7, else 0 (section 5); or zeros.")
flags.DEFINE_float("dropout_rate", paper.DROPOUT_RATE, "Dropout after fc6 and fc7 (section 4.2).")
flags.DEFINE_string("towers_on", "auto",
                    "Tower devices: 'auto' (two GPUs if present), 'none', or 'DEV_A,DEV_B' "
                    "such as '/GPU:0,/GPU:1'.")

flags.register_validator("towers", lambda v: v in (1, 2), message="--towers must be 1 or 2.")
flags.register_validator("dropout_rate", lambda v: 0.0 <= v < 1.0,
                         message="--dropout_rate must be in [0, 1).")
flags.register_validator("pool_size", lambda v: v >= 1, message="--pool_size must be >= 1.")
flags.register_validator("pool_stride", lambda v: v >= 1, message="--pool_stride must be >= 1.")


def model_kwargs(flag_values):
    """The `build_alexnet` keyword arguments the model flags ask for."""
    towers_on = flag_values.towers_on
    return dict(towers=flag_values.towers, lrn=flag_values.lrn, pool_size=flag_values.pool_size,
                pool_stride=flag_values.pool_stride, activation=flag_values.activation,
                kernel_init=flag_values.kernel_init, bias_init=flag_values.bias_init,
                dropout_rate=flag_values.dropout_rate,
                devices=None if towers_on.lower() == "none" else towers_on)

"""The model's flags, derived once from `config.ModelConfig` for every CLI that builds an AlexNet."""

from absl import flags

from alexnet_tf import config

config.define_flags(config.ModelConfig)


def model_config(flag_values=flags.FLAGS):
    """The `ModelConfig` the model flags describe."""
    return config.from_flags(config.ModelConfig, flag_values)

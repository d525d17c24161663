"""The paper's optimiser (section 5): SGD with momentum and weight decay inside the momentum.

    v <- momentum * v - weight_decay * lr * w - lr * dL/dw
    w <- w + v

Weight decay is coupled (it enters the velocity, like an L2 term in the
gradient), and applies to kernels only: every variable of rank 2 or more. Biases
(rank 1) are not decayed. This differs from `keras.optimizers.SGD(weight_decay=)`,
which decays after the momentum step (decoupled) and decays biases too.

`lr_multipliers` (fine-tuning, not the paper) scales the rate of a layer's variables:
v <- momentum * v - factor * lr * (weight_decay * w + dL/dw).

On TensorFlow the update is one fused TF kernel; on JAX and PyTorch it is the same rule in
`keras.ops`. Imports no TensorFlow.
"""

import keras
from keras import ops

from alexnet_tf import paper
from alexnet_tf.model.layers import on_tensorflow
from alexnet_tf.model.network import base_name


def is_decayed(variable):
    """Weight decay applies to kernels (rank >= 2), not to biases (rank 1)."""
    return len(variable.shape) >= 2


def _tf_variable(variable):
    """The tf.Variable behind a Keras variable (the TF kernels take its handle)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


@keras.saving.register_keras_serializable(package="alexnet_tf")
class PaperSGD(keras.optimizers.Optimizer):
    """SGD with momentum and coupled weight decay on kernels only (the paper's section 5).

    Args:
      learning_rate: Initial learning rate (0.01 in the paper); a float, so it
        lives in a variable that a schedule can assign to.
      momentum: Momentum (0.9).
      weight_decay: Decay coefficient that enters the velocity (0.0005).
      lr_multipliers: {layer: factor}: the rate of that layer's variables (both towers', by the
        layer's name without `_a`/`_b`, e.g. "conv1") times the factor. None: all 1.
      name: Optimiser name.
      **kwargs: Other `keras.optimizers.Optimizer` arguments (not `weight_decay`
        of the base class, which would decouple the decay).

    Example:

    >>> opt = PaperSGD(learning_rate=0.01, momentum=0.9, weight_decay=0.0005)
    >>> opt.apply(grads, model.trainable_variables)  # doctest: +SKIP
    """

    def __init__(self, learning_rate=paper.LEARNING_RATE, momentum=paper.MOMENTUM,
                 weight_decay=paper.WEIGHT_DECAY, lr_multipliers=None, name="paper_sgd",
                 **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        self.momentum = float(momentum)
        # Not `self.weight_decay`: the base class would apply that one decoupled.
        self.coupled_weight_decay = float(weight_decay)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        if any(not v >= 0 for v in self.lr_multipliers.values()):
            raise ValueError(f"lr_multipliers must be >= 0, got {self.lr_multipliers}.")

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.velocities = [self.add_variable_from_reference(v, name="velocity") for v in variables]
        # Each variable's rate factor, by its layer ("conv1_a/kernel" -> conv1).
        self.factors = [self.lr_multipliers.get(
            base_name(getattr(v, "path", v.name).split("/")[0]), 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        # v <- momentum * v - lr * g';  w <- w + v,   with g' = g + weight_decay * w for
        # kernels (g' = g for biases): the paper's rule term by term.
        index = self._get_variable_index(variable)
        velocity = self.velocities[index]
        if self.factors[index] != 1.0:
            learning_rate = learning_rate * self.factors[index]
        dtype = variable.dtype
        gradient = ops.cast(gradient, dtype)
        if is_decayed(variable) and self.coupled_weight_decay:
            gradient = gradient + ops.cast(self.coupled_weight_decay, dtype) * variable
        if on_tensorflow():
            self._fused_tf_update(gradient, variable, velocity, learning_rate)
            return
        self.assign(velocity, ops.cast(self.momentum, dtype) * velocity
                    - ops.cast(learning_rate, dtype) * gradient)
        self.assign_add(variable, velocity)

    def _fused_tf_update(self, gradient, variable, velocity, learning_rate):
        # One fused TF kernel (ResourceApplyKerasMomentum) does both lines of the update with
        # the decayed gradient g'; fused, it reads and writes the parameters far fewer times
        # than separate element-wise ops.
        import tensorflow as tf
        velocity, variable = _tf_variable(velocity), _tf_variable(variable)
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=velocity.handle, lr=tf.cast(learning_rate, dtype),
            grad=gradient, momentum=tf.cast(self.momentum, dtype), use_locking=False,
            use_nesterov=False)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        # (TensorFlow's optimizer only.) With one replica the sum is the gradient itself.
        # Keras' TensorFlow optimizer all-reduces anyway, through a differentiable
        # (tf.custom_gradient) all-reduce that keeps ~0.47 GB per traced train step alive for
        # the life of the process.
        import tensorflow as tf
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return list(grads_and_vars)
        return super()._all_reduce_sum_gradients(grads_and_vars)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum,
                "weight_decay": self.coupled_weight_decay,
                "lr_multipliers": dict(self.lr_multipliers) or None}

"""Adam as the official codes apply it, one fused kernel per variable.

Keras' Adam writes every variable's update as about fifteen element-wise ops (casts, powers,
two moment updates, square root, divide, three assignments). A training step of StyleGAN2 has
~60 variables per network and applies an optimizer up to four times, so those ops were a third
of the time spent tracing a step, and small kernels each costing a dispatch when it runs. Here
each variable's update is one `ResourceApplyAdam` (TensorFlow's own kernel, also compiled by
XLA), which computes, element-wise and in the variable's dtype,

    m <- m + (g - m)(1 - b1);  v <- v + (g^2 - v)(1 - b2)
    w <- w - alpha m / (sqrt(v) + eps),  alpha = lr sqrt(1 - b2^t) / (1 - b1^t)

the update of Keras' Adam and of TF1's `tf.train.AdamOptimizer` (official StyleGAN/StyleGAN2,
"epsilon hat"). `TorchAdam` feeds the same kernel PyTorch's update (official U-GAT-IT and
BigGAN-PyTorch).
Both keep Keras' slots and counters, so checkpoints are those of `keras.optimizers.Adam`.

The kernel's scalars (lr, b1^t, b2^t, eps) are computed once per optimizer step and device, not
once per variable: per variable they were seven more small kernels (reads of the learning rate and
of the step counter, add, cast, two powers), 693 per StyleGAN2 demo iteration (99 variables).
"""

import keras
import tensorflow as tf


def _handle(variable):
    """The resource handle of a (Keras, distributed or plain) variable; inside
    `strategy.extended.update` a distributed variable gives the current device's copy."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


@keras.saving.register_keras_serializable(package="training")
class Adam(keras.optimizers.Adam):
    """keras.optimizers.Adam (same arguments, slots and update) with one fused kernel per
    variable. No `amsgrad` (no official code uses it, and the kernel has no v_hat)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError(f"{type(self).__name__}: amsgrad is not supported.")

    def _epsilon(self, beta_2_power):
        """The kernel's eps for this optimizer's update (Keras / TF1: eps itself)."""
        return tf.cast(self.epsilon, beta_2_power.dtype)

    def _gradient(self, gradient, variable):
        return gradient

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        """Keras' loop (an update per variable, on each variable's device) with one set of this
        step's scalars per device and dtype, made on first use."""
        scalars = {}

        def apply_gradient(variable, gradient, learning_rate):
            return self._apply_adam(gradient, variable, learning_rate, scalars)

        for gradient, variable in grads_and_vars:
            distribution.extended.update(variable, apply_gradient,
                                         args=(gradient, learning_rate), group=False)

    def _scalars(self, variable, learning_rate):
        """(lr, b1, b2, b1^t, b2^t, eps) of this step in the variable's dtype, t = iterations + 1."""
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        beta_2_power = tf.pow(beta_2, step)
        return (tf.cast(learning_rate, dtype), beta_1, beta_2, tf.pow(beta_1, step),
                beta_2_power, self._epsilon(beta_2_power))

    def _apply_adam(self, gradient, variable, learning_rate, scalars):
        """One ResourceApplyAdam; `scalars`: {(device, dtype): `_scalars`} of this step,
        filled on first use."""
        dtype = variable.dtype
        if isinstance(gradient, tf.IndexedSlices):   # e.g. embeddings: the kernel is dense
            gradient = tf.convert_to_tensor(gradient)
        gradient = self._gradient(tf.cast(gradient, dtype), variable)
        key = (getattr(variable, "device", ""), dtype)
        if key not in scalars:
            scalars[key] = self._scalars(variable, learning_rate)
        lr, beta_1, beta_2, beta_1_power, beta_2_power, epsilon = scalars[key]
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]), beta1_power=beta_1_power,
            beta2_power=beta_2_power, lr=lr, beta1=beta_1, beta2=beta_2, epsilon=epsilon,
            grad=gradient, use_locking=False)

    def update_step(self, gradient, variable, learning_rate):
        self._apply_adam(gradient, variable, learning_rate, {})


@keras.saving.register_keras_serializable(package="training")
class TorchAdam(Adam):
    """torch.optim.Adam: coupled (L2) weight decay and epsilon on the corrected sqrt(v).

        g <- g + wd * w;  m <- m + (g - m)(1 - b1);  v <- b2 v + (1 - b2) g^2
        w <- w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    computed by the fused kernel with eps' = eps sqrt(1 - b2^t), the same update:
    alpha m / (sqrt(v) + eps') = lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    Keras applies gradients already summed over replicas (and un-scaled by a
    LossScaleOptimizer) to `update_step`, so the decay term is added once per variable.

    Args:
      learning_rate, beta_1, beta_2, epsilon: as torch.optim.Adam (lr may be a callable).
      coupled_weight_decay: torch's weight_decay (official U-GAT-IT: 1e-4).
    """

    def __init__(self, learning_rate=1e-4, beta_1=0.5, beta_2=0.999, epsilon=1e-8,
                 coupled_weight_decay=0.0, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, **kwargs)
        if not float(coupled_weight_decay) >= 0.0:
            raise ValueError(f"TorchAdam: coupled_weight_decay must be >= 0, got "
                             f"{coupled_weight_decay!r}.")
        self.coupled_weight_decay = float(coupled_weight_decay)

    def _epsilon(self, beta_2_power):
        return tf.cast(self.epsilon, beta_2_power.dtype) * tf.sqrt(1.0 - beta_2_power)

    def _gradient(self, gradient, variable):
        if not self.coupled_weight_decay:
            return gradient
        return gradient + self.coupled_weight_decay * tf.convert_to_tensor(variable)

    def get_config(self):
        config = super().get_config()
        config["coupled_weight_decay"] = self.coupled_weight_decay
        return config


def lazy_adam(learning_rate, betas, epsilon, interval, name="adam"):
    """Adam with NVlabs' lazy-regularisation adjustment c = interval / (interval + 1).

    lr * c and betas ** c (official `mb_ratio`); interval 1 = plain Adam. -> (optimizer, c).
    """
    c = interval / (interval + 1.0) if interval > 1 else 1.0
    return Adam(learning_rate * c, beta_1=betas[0] ** c, beta_2=betas[1] ** c,
                epsilon=epsilon, name=name), c


def built_for(optimizer, variables, loss_scaling, prefix):
    """`optimizer` built for `variables`, inside a LossScaleOptimizer when loss_scaling.

    Args:
      optimizer: a Keras optimizer named explicitly (checkpoint keys and slot names are
        variable paths, which must not depend on how many optimizers the process made before).
      variables: the trainable variables it updates.
      loss_scaling: True under mixed_float16: dynamic loss scaling, whose wrapper is named
        "<prefix>_loss_scale" for the same reason.
      prefix: "g" or "d".
    """
    if loss_scaling:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=f"{prefix}_loss_scale")
    optimizer.build(variables)
    return optimizer

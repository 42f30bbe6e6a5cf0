"""Normalisation layers of the U-GAT-IT and BigGAN ports: spectral norm, batch norms, (Ada)ILN.

Reads top-down: initialisers and the layer-container helper shared by ugatit.py and biggan.py,
the spectral-norm power iteration and the one spectral-norm base layer with its conv / dense /
embedding forms, BigGAN's batch norms (running statistics kept the
PyTorch way), and U-GAT-IT's instance and layer-instance norms. Layout is NHWC throughout.

Why our own layers:
- `keras.layers.SpectralNormalization` overwrites the wrapped kernel with W/sigma and blocks the
  gradient through sigma; PyTorch's `spectral_norm` and BigGAN-PyTorch keep W, differentiate
  through sigma, and store the singular vectors (98% relative gradient difference measured).
- `keras.layers.BatchNormalization` updates its moving variance with the biased batch variance
  and uses momentum as the weight of the old value; PyTorch uses the unbiased variance and
  momentum as the weight of the new value.

Distribution (tf.distribute) contract, relied on by the trainers:
- Spectral-norm vectors (u, v, sv) are non-trainable float32 variables with
  `aggregation="only_first_replica"`, updated inside the training forward pass. The power
  iteration is deterministic given W and u, and W is identical on every replica, so each replica
  computes the same update and all replicas keep identical vectors.
- Batch-norm running statistics are updated from moments all-reduced over the replicas, so they
  equal one device with the global batch on every replica. The normalisation itself uses the
  replica's own batch statistics (BigGAN-PyTorch's default, not synchronised) unless
  `cross_replica=True` (BigGAN-PyTorch's `--cross_replica`, synchronised batch norm).
"""

import math

import keras
import tensorflow as tf

from networks.layers import check_int

SN_MODES = ("pytorch", "biggan")
# Default epsilon of the normalisation inside the power iteration, per mode:
# torch.nn.utils.spectral_norm uses 1e-12; BigGAN-PyTorch's CIFAR scripts pass --SN_eps 1e-8
# (ImageNet 64^2: 1e-6).
SN_DEFAULT_EPSILON = {"pytorch": 1e-12, "biggan": 1e-8}

# State variables that every replica updates identically (see module docstring).
_REPLICA_STATE = dict(trainable=False, dtype="float32", autocast=False,
                      aggregation="only_first_replica")

#----------------------------------------------------------------------------
# Initialisers.


def pytorch_kernel_initializer():
    """PyTorch's default Conv2d / Linear weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (kaiming_uniform with a = sqrt(5).) Keras' fan_in of a (kh, kw, in, out) kernel is
    kh*kw*in, as PyTorch's.
    """
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in",
                                              distribution="uniform")


def pytorch_bias_initializer(fan_in):
    """PyTorch's default Conv2d / Linear bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def fresh_initializer(initializer):
    """A new instance of `initializer` (any form keras.initializers.get accepts).

    An unseeded Keras initializer draws its seed once, at construction, so one instance used for
    two weights of the same shape gives them identical values; networks therefore take one fresh
    instance per weight.
    """
    initializer = keras.initializers.get(initializer)
    return type(initializer).from_config(initializer.get_config())


def track_layers(owner, name, layers, prefix):
    """Sets owner.<name> = layers (a list or dict of layers) so that tf.train.Checkpoint saves them.

    Keras 3 (3.15, TF backend) wraps list / dict attributes of a layer in its own tracked
    containers, which Keras' `weights` see but TensorFlow's checkpoint object graph does not:
    tf.train.Checkpoint silently saves nothing of layers held in a list or dict. Each layer is
    therefore also set as its own attribute `<prefix><index or key>` (the checkpoint key), and
    the container is stored as a plain Python object, untracked, for iteration.
    """
    items = layers.items() if isinstance(layers, dict) else enumerate(layers)
    for key, layer in items:
        setattr(owner, f"{prefix}{key}", layer)
    object.__setattr__(owner, name, layers)
    return layers


def _l2_normalize(x, epsilon):
    """x / max(||x||, epsilon), as torch.nn.functional.normalize."""
    return x / tf.maximum(tf.norm(x), epsilon)



#----------------------------------------------------------------------------
# Spectral normalisation.


def power_iteration(w_mat, u, v, mode, epsilon, iterations, training):
    """Largest singular value of W by the power method, with either library's semantics.

    Args:
      w_mat: float32 (O, I) weight matrix in PyTorch ordering (rows = outputs).
      u: float32 (O,) stored left singular vector.
      v: float32 (I,) stored right singular vector ("pytorch" mode), or None ("biggan").
      mode: "pytorch" = torch.nn.utils.spectral_norm: in training `iterations` steps
          v = normalize(W^T u), u = normalize(W v); in eval no iteration, sigma from the stored
          u and v. "biggan" = BigGAN-PyTorch `SN.W_`: each step v = normalize(u W),
          u = normalize(v W^T) starting from the stored u (in eval every step restarts from the
          stored u, since it is not updated, so eval equals one step).
      epsilon: lower bound of the norm in normalize.
      iterations: power-iteration steps (>= 1).
      training: Python bool.

    Returns:
      (sigma, u, v): sigma = u^T W v (= v W^T u^T) with u and v held constant, so the gradient
      flows into W only through the matrix, as in both libraries; u and v are the vectors to
      store (equal to the inputs when nothing is to be stored).
    """
    if mode == "pytorch":
        if training:
            for _ in range(iterations):
                v = _l2_normalize(tf.linalg.matvec(w_mat, u, transpose_a=True), epsilon)
                u = _l2_normalize(tf.linalg.matvec(w_mat, v), epsilon)
        u_used, v_used = u, v
    else:
        u_start = u
        for _ in range(iterations):
            v_used = _l2_normalize(tf.linalg.matvec(w_mat, u_start, transpose_a=True), epsilon)
            u_used = _l2_normalize(tf.linalg.matvec(w_mat, v_used), epsilon)
            if training:
                u_start = u_used
        u = u_start
    u_used, v_used = tf.stop_gradient(u_used), tf.stop_gradient(v_used)
    sigma = tf.reduce_sum(u_used * tf.linalg.matvec(w_mat, v_used))
    return sigma, u, v


class SpectralNormLayer(keras.layers.Layer):
    """Base of the spectrally normalised layers: W_sn = W / sigma(W) (Miyato et al. 2018).

    Subclasses own the raw weight `kernel` (float32 even under mixed precision) and implement
    `_weight_matrix()`, the (O, I) view in PyTorch ordering, so stored vectors match PyTorch's
    `weight_u` / `weight_v` (U-GAT-IT) and `u0` (BigGAN) for weight import.

    Args:
      sn_mode: "pytorch" (torch.nn.utils.spectral_norm, used by U-GAT-IT: u and v stored, both
        initialised as normalised N(0, 1) vectors; one power iteration per training forward,
        eval uses the stored u, v unchanged) or "biggan" (BigGAN-PyTorch `layers.SN`: only u
        stored, initialised N(0, 1) unnormalised; the power iteration also runs in eval, its
        result is stored only in training, together with the singular value `sv`).
      sn_epsilon: epsilon of the normalisations. None = 1e-12 ("pytorch") or 1e-8 ("biggan").
      power_iterations: power-iteration steps per forward (1 in both libraries' defaults).

    State (non-trainable float32, `aggregation="only_first_replica"`; see the module docstring):
      sn_u (O,); sn_v (I,) in "pytorch" mode; sn_sv () in "biggan" mode (logging only).

    `training` is a Python bool: True is PyTorch's `.train()` (vectors updated in the forward),
    False / None its `.eval()`.
    """

    def __init__(self, sn_mode="pytorch", sn_epsilon=None, power_iterations=1, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        if sn_mode not in SN_MODES:
            raise ValueError(f"{owner}: sn_mode must be one of {SN_MODES}, got {sn_mode!r}.")
        if sn_epsilon is None:
            sn_epsilon = SN_DEFAULT_EPSILON[sn_mode]
        if not float(sn_epsilon) > 0.0:
            raise ValueError(f"{owner}: sn_epsilon must be > 0, got {sn_epsilon!r}.")
        check_int(power_iterations, f"{owner}: power_iterations", 1)
        self.sn_mode = sn_mode
        self.sn_epsilon = float(sn_epsilon)
        self.power_iterations = power_iterations

    def _build_spectral_norm(self, num_outputs, num_inputs):
        normalize = self.sn_mode == "pytorch"
        epsilon = self.sn_epsilon

        def vector_initializer(shape, dtype=None):
            # A fresh unseeded initializer per vector: an unseeded Keras initializer repeats its
            # values when reused, and keras.utils.set_random_seed still makes it reproducible.
            x = keras.initializers.RandomNormal(stddev=1.0)(shape, dtype="float32")
            return _l2_normalize(x, epsilon) if normalize else x

        self.sn_u = self.add_weight(name="sn_u", shape=(num_outputs,),
                                    initializer=vector_initializer, **_REPLICA_STATE)
        if self.sn_mode == "pytorch":
            self.sn_v = self.add_weight(name="sn_v", shape=(num_inputs,),
                                        initializer=vector_initializer, **_REPLICA_STATE)
        else:
            self.sn_sv = self.add_weight(name="sn_sv", shape=(), initializer="ones",
                                         **_REPLICA_STATE)

    def _weight_matrix(self):
        raise NotImplementedError

    def spectral_norm(self, training=False):
        """sigma(W) for this forward pass, updating the stored vectors when training.

        Returns a float32 scalar; the gradient reaches the kernel through W only.
        """
        w_mat = self._weight_matrix()
        v = self.sn_v if self.sn_mode == "pytorch" else None
        sigma, u, v = power_iteration(
            w_mat, tf.convert_to_tensor(self.sn_u),
            None if v is None else tf.convert_to_tensor(v),
            self.sn_mode, self.sn_epsilon, self.power_iterations, bool(training))
        if training:
            self.sn_u.assign(u)
            if self.sn_mode == "pytorch":
                self.sn_v.assign(v)
            else:
                self.sn_sv.assign(tf.stop_gradient(sigma))
        return sigma

    def normalized_kernel(self, training=False):
        """W / sigma(W) in the layer's compute dtype (the kernel itself stays float32)."""
        kernel = tf.convert_to_tensor(self.kernel) / self.spectral_norm(training)
        return tf.cast(kernel, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"sn_mode": self.sn_mode, "sn_epsilon": self.sn_epsilon,
                       "power_iterations": self.power_iterations})
        return config


@keras.saving.register_keras_serializable(package="networks")
class SNConv2D(SpectralNormLayer):
    """2-D convolution with a spectrally normalised kernel (PyTorch `spectral_norm(Conv2d)` or
    BigGAN-PyTorch `SNConv2d`).

    Args:
      filters: output channels O.
      kernel_size: square kernel size k.
      strides: stride.
      padding: "valid" or "same" ("same" with stride 1 and odd k is PyTorch's padding=k//2 with
        zeros; reflection padding is applied by the caller).
      use_bias: add a bias (not normalised).
      kernel_initializer: default PyTorch's U(+-1/sqrt(fan_in)).
      bias_initializer: default PyTorch's U(+-1/sqrt(fan_in)).
      **kwargs: SpectralNormLayer arguments (sn_mode, sn_epsilon, power_iterations) and Layer's.

    Input shape: (N, H, W, I). Output shape: (N, H', W', O).
    Weights: kernel (k, k, I, O) float32 = PyTorch weight (O, I, k, k).permute(2, 3, 1, 0);
      the power iteration uses W_mat = kernel.transpose(3, 2, 0, 1).reshape(O, I*k*k).
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", use_bias=True,
                 kernel_initializer=None, bias_initializer=None, **kwargs):
        super().__init__(**kwargs)
        check_int(filters, "SNConv2D: filters", 1)
        check_int(kernel_size, "SNConv2D: kernel_size", 1)
        check_int(strides, "SNConv2D: strides", 1)
        if padding not in ("valid", "same"):
            raise ValueError(f"SNConv2D: padding must be 'valid' or 'same', got {padding!r}.")
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or pytorch_kernel_initializer())
        self.bias_initializer = (None if bias_initializer is None
                                 else keras.initializers.get(bias_initializer))

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"SNConv2D '{self.name}': the channel count must be known, got "
                             f"input shape {tuple(input_shape)}.")
        k = self.kernel_size
        fan_in = k * k * int(channels)
        self.kernel = self.add_weight(name="kernel", shape=(k, k, int(channels), self.filters),
                                      initializer=self.kernel_initializer, dtype="float32",
                                      autocast=False)
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,),
                initializer=self.bias_initializer or pytorch_bias_initializer(fan_in))
        self._build_spectral_norm(self.filters, fan_in)

    def _weight_matrix(self):
        kernel = tf.convert_to_tensor(self.kernel)
        return tf.reshape(tf.transpose(kernel, (3, 2, 0, 1)), (self.filters, -1))

    def call(self, inputs, training=None):
        kernel = self.normalized_kernel(bool(training))
        outputs = tf.nn.conv2d(inputs, kernel, self.strides, self.padding.upper())
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return outputs

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape

        def size(s):
            if s is None:
                return None
            if self.padding == "same":
                return -(-s // self.strides)
            return (s - self.kernel_size) // self.strides + 1

        return (n, size(h), size(w), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides,
            "padding": self.padding, "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": (None if self.bias_initializer is None
                                 else keras.initializers.serialize(self.bias_initializer)),
        })
        return config


@keras.saving.register_keras_serializable(package="networks")
class SNDense(SpectralNormLayer):
    """Fully connected layer with a spectrally normalised kernel (PyTorch `spectral_norm(Linear)`
    or BigGAN-PyTorch `SNLinear`).

    Args:
      units: output features O.
      use_bias: add a bias (not normalised).
      kernel_initializer / bias_initializer: default PyTorch's U(+-1/sqrt(fan_in)).
      **kwargs: SpectralNormLayer arguments and Layer's.

    Input shape: (N, I). Output shape: (N, O).
    Weights: kernel (I, O) float32 = PyTorch weight (O, I).T; W_mat = kernel.T.
    """

    def __init__(self, units, use_bias=True, kernel_initializer=None, bias_initializer=None,
                 **kwargs):
        super().__init__(**kwargs)
        check_int(units, "SNDense: units", 1)
        self.units = units
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or pytorch_kernel_initializer())
        self.bias_initializer = (None if bias_initializer is None
                                 else keras.initializers.get(bias_initializer))

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(f"SNDense '{self.name}': the feature count must be known, got "
                             f"input shape {tuple(input_shape)}.")
        features = int(features)
        self.kernel = self.add_weight(name="kernel", shape=(features, self.units),
                                      initializer=self.kernel_initializer, dtype="float32",
                                      autocast=False)
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,),
                initializer=self.bias_initializer or pytorch_bias_initializer(features))
        self._build_spectral_norm(self.units, features)

    def _weight_matrix(self):
        return tf.transpose(tf.convert_to_tensor(self.kernel))

    def call(self, inputs, training=None):
        outputs = tf.matmul(inputs, self.normalized_kernel(bool(training)))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units, "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": (None if self.bias_initializer is None
                                 else keras.initializers.serialize(self.bias_initializer)),
        })
        return config


@keras.saving.register_keras_serializable(package="networks")
class SNEmbedding(SpectralNormLayer):
    """Embedding table with spectral norm over the (classes, dim) table, BigGAN-PyTorch
    `SNEmbedding` (the projection discriminator's class embedding).

    Args:
      input_dim: number of classes (rows; the power iteration's "outputs", as in BigGAN).
      output_dim: embedding size.
      embeddings_initializer: default N(0, 1), PyTorch's nn.Embedding init.
      **kwargs: SpectralNormLayer arguments and Layer's.

    Input shape: int (N,). Output shape: (N, output_dim).
    Weights: kernel (input_dim, output_dim) = PyTorch weight; W_mat = kernel.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer=None, **kwargs):
        super().__init__(**kwargs)
        check_int(input_dim, "SNEmbedding: input_dim", 1)
        check_int(output_dim, "SNEmbedding: output_dim", 1)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer or keras.initializers.RandomNormal(stddev=1.0))

    def build(self, input_shape=None):
        self.kernel = self.add_weight(name="kernel", shape=(self.input_dim, self.output_dim),
                                      initializer=self.embeddings_initializer, dtype="float32",
                                      autocast=False)
        self._build_spectral_norm(self.input_dim, self.output_dim)

    def _weight_matrix(self):
        return tf.convert_to_tensor(self.kernel)

    def call(self, inputs, training=None):
        return tf.gather(self.normalized_kernel(bool(training)), tf.cast(inputs, tf.int32))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "input_dim": self.input_dim, "output_dim": self.output_dim,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        })
        return config


#----------------------------------------------------------------------------
# Batch normalisation with PyTorch running statistics (BigGAN-PyTorch `bn` and `ccbn`).


class _StoredStatisticsNorm(keras.layers.Layer):
    """Normalisation part of F.batch_norm(x, stored_mean, stored_var, training, momentum, eps).

    Training: normalise with the batch mean and biased variance over (N, H, W); update
      stored_mean <- (1 - momentum) stored_mean + momentum mean,
      stored_var  <- (1 - momentum) stored_var  + momentum var * n / (n - 1)   (unbiased),
      n = N*H*W over the global batch (moments all-reduced over replicas, see module docstring).
    Eval: normalise with the stored statistics.
    All statistics are float32; the output has the input's dtype.
    """

    def __init__(self, momentum=0.1, epsilon=1e-5, cross_replica=False, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        owner = type(self).__name__
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"{owner}: momentum must be in [0, 1], got {momentum!r}.")
        if not float(epsilon) > 0.0:
            raise ValueError(f"{owner}: epsilon must be > 0, got {epsilon!r}.")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.cross_replica = bool(cross_replica)
        self.channels = None

    def _build_statistics(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"{type(self).__name__} '{self.name}': inputs must be NHWC with a "
                             f"known channel count, got shape {tuple(input_shape)}.")
        self.channels = int(input_shape[-1])
        self.stored_mean = self.add_weight(name="stored_mean", shape=(self.channels,),
                                           initializer="zeros", **_REPLICA_STATE)
        self.stored_var = self.add_weight(name="stored_var", shape=(self.channels,),
                                          initializer="ones", **_REPLICA_STATE)

    def _batch_moments(self, x):
        """(mean, variance) to normalise with, and (mean, unbiased variance) of the global batch."""
        axes = [0, 1, 2]
        local_mean, local_var = tf.nn.moments(x, axes)
        count = tf.cast(tf.size(x) // self.channels, tf.float32)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # Two passes (mean, then squared deviations) keep float32 accuracy.
            total, count = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                              [tf.reduce_sum(x, axes), count])
            global_mean = total / count
            squares = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                         tf.reduce_sum(tf.square(x - global_mean), axes))
            global_var = squares / count
        else:
            global_mean, global_var = local_mean, local_var
        unbiased_var = global_var * count / tf.maximum(count - 1.0, 1.0)
        if self.cross_replica:
            return (global_mean, global_var), (global_mean, unbiased_var)
        return (local_mean, local_var), (global_mean, unbiased_var)

    def _normalize(self, x, training):
        """Returns float32 (x - mean) / sqrt(var + eps)."""
        x = tf.cast(x, tf.float32)
        if training:
            (mean, var), (running_mean, running_var) = self._batch_moments(x)
            m = self.momentum
            self.stored_mean.assign((1.0 - m) * self.stored_mean + m * tf.stop_gradient(running_mean))
            self.stored_var.assign((1.0 - m) * self.stored_var + m * tf.stop_gradient(running_var))
        else:
            mean, var = tf.convert_to_tensor(self.stored_mean), tf.convert_to_tensor(self.stored_var)
        return (x - mean) * tf.math.rsqrt(var + self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "epsilon": self.epsilon,
                       "cross_replica": self.cross_replica})
        return config


@keras.saving.register_keras_serializable(package="networks")
class BatchNorm(_StoredStatisticsNorm):
    """Batch norm with learned gain (init 1) and bias (init 0), BigGAN-PyTorch `layers.bn`.

    Args:
      momentum: weight of the new batch statistics in the running statistics (PyTorch: 0.1).
      epsilon: added to the variance (1e-5).
      cross_replica: normalise with statistics all-reduced over replicas (synchronised BN).

    Input shape: (N, H, W, C). Output: same. call(x, training).
    Weights: gain (C,), bias (C,); state stored_mean (C,), stored_var (C,).
    """

    def build(self, input_shape):
        self._build_statistics(input_shape)
        self.gain = self.add_weight(name="gain", shape=(self.channels,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(self.channels,), initializer="zeros")

    def call(self, inputs, training=None):
        out = self._normalize(inputs, bool(training)) * self.gain + self.bias
        return tf.cast(out, inputs.dtype)


@keras.saving.register_keras_serializable(package="networks")
class ConditionalBatchNorm(_StoredStatisticsNorm):
    """Class-conditional batch norm, BigGAN-PyTorch `ccbn`: BN without affine, then
    out = x_hat * (1 + gain(y)) + bias(y).

    Two forms, as in BigGAN-PyTorch:
    - num_classes given (CIFAR): y is int labels (N,); gain and bias are plain embedding tables
      (num_classes, C) (not spectrally normalised), N(0, 0.02) by default.
    - num_classes None (ImageNet, shared embedding): y is a float vector (N, D) (shared class
      embedding concatenated with a z chunk); gain and bias are SNDense(C, no bias) layers.

    Args:
      num_classes: see above.
      momentum, epsilon, cross_replica: as BatchNorm.
      embeddings_initializer: init of the tables or of the SNDense kernels (default N(0, 0.02)).
      sn_kwargs: dict of SNDense arguments (sn_mode defaults to "biggan") for the vector form.

    Input: x (N, H, W, C) and y as above; call(x, y, training). Output: like x.
    """

    def __init__(self, num_classes=None, momentum=0.1, epsilon=1e-5, cross_replica=False,
                 embeddings_initializer=None, sn_kwargs=None, **kwargs):
        super().__init__(momentum=momentum, epsilon=epsilon, cross_replica=cross_replica,
                         **kwargs)
        if num_classes is not None:
            check_int(num_classes, "ConditionalBatchNorm: num_classes", 1)
        self.num_classes = num_classes
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer or keras.initializers.RandomNormal(stddev=0.02))
        self.sn_kwargs = dict(sn_kwargs or {})
        self.sn_kwargs.setdefault("sn_mode", "biggan")

    def build(self, inputs_shape, condition_shape=None):
        self._build_statistics(inputs_shape)
        if self.num_classes is not None:
            self.gain = self.add_weight(
                name="gain", shape=(self.num_classes, self.channels),
                initializer=fresh_initializer(self.embeddings_initializer))
            self.bias = self.add_weight(
                name="bias", shape=(self.num_classes, self.channels),
                initializer=fresh_initializer(self.embeddings_initializer))
        else:
            if condition_shape is None or condition_shape[-1] is None:
                raise ValueError(
                    f"ConditionalBatchNorm '{self.name}': without num_classes the condition is a "
                    "float vector (N, D); build(inputs_shape, condition_shape) needs its D, got "
                    f"condition_shape={condition_shape!r}.")
            self.gain = SNDense(self.channels, use_bias=False, name="gain",
                                kernel_initializer=fresh_initializer(self.embeddings_initializer),
                                **self.sn_kwargs)
            self.bias = SNDense(self.channels, use_bias=False, name="bias",
                                kernel_initializer=fresh_initializer(self.embeddings_initializer),
                                **self.sn_kwargs)
            self.gain.build(condition_shape)
            self.bias.build(condition_shape)

    def call(self, inputs, condition, training=None):
        training = bool(training)
        if self.num_classes is not None:
            labels = tf.cast(condition, tf.int32)
            gain = tf.gather(tf.convert_to_tensor(self.gain), labels)
            bias = tf.gather(tf.convert_to_tensor(self.bias), labels)
        else:
            condition = tf.cast(condition, tf.float32)
            gain = self.gain(condition, training=training)
            bias = self.bias(condition, training=training)
        gain = tf.cast(gain, tf.float32)[:, tf.newaxis, tf.newaxis, :]
        bias = tf.cast(bias, tf.float32)[:, tf.newaxis, tf.newaxis, :]
        out = self._normalize(inputs, training) * (1.0 + gain) + bias
        return tf.cast(out, inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            "sn_kwargs": dict(self.sn_kwargs),
        })
        return config


#----------------------------------------------------------------------------
# Instance and layer-instance normalisation (U-GAT-IT).


def instance_norm(name=None):
    """PyTorch InstanceNorm2d(affine=False, eps=1e-5): biased variance per sample and channel."""
    return keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, center=False, scale=False,
                                           name=name)


def layer_instance_normalize(x, rho, epsilon):
    """rho * IN(x) + (1 - rho) * LN(x), U-GAT-IT's ILN core, in float32.

    IN uses mean and **unbiased** variance over (H, W) per sample and channel; LN over (H, W, C)
    per sample (torch.var's default N - 1), both with epsilon inside the square root.

    Args:
      x: (N, H, W, C). rho: (C,). Returns float32 (N, H, W, C).
    """
    x = tf.cast(x, tf.float32)
    shape = tf.shape(x)
    hw = tf.cast(shape[1] * shape[2], tf.float32)
    in_mean, in_var = tf.nn.moments(x, [1, 2], keepdims=True)
    in_var = in_var * hw / (hw - 1.0)
    chw = hw * tf.cast(shape[3], tf.float32)
    ln_mean, ln_var = tf.nn.moments(x, [1, 2, 3], keepdims=True)
    ln_var = ln_var * chw / (chw - 1.0)
    out_in = (x - in_mean) * tf.math.rsqrt(in_var + epsilon)
    out_ln = (x - ln_mean) * tf.math.rsqrt(ln_var + epsilon)
    rho = tf.cast(rho, tf.float32)
    return rho * out_in + (1.0 - rho) * out_ln


class _RhoMixin:
    """rho in [0, 1] mixes IN and LN; the generator clips it after every optimiser step."""

    def clip_rho(self):
        """rho <- clip(rho, 0, 1) per element (U-GAT-IT's RhoClipper). Works in a replica
        context: every replica clips the same (identical) value."""
        self.rho.assign(tf.clip_by_value(self.rho, 0.0, 1.0))


@keras.saving.register_keras_serializable(package="networks")
class AdaptiveLayerInstanceNorm(_RhoMixin, keras.layers.Layer):
    """AdaILN (U-GAT-IT Eq. 5): (rho * IN(x) + (1 - rho) * LN(x)) * gamma + beta.

    Args:
      epsilon: 1e-5. rho_init: 0.9 (official).

    Input: x (N, H, W, C), gamma (N, C), beta (N, C) from the generator's MLP;
      call(x, gamma, beta). Output: like x. Weights: rho (C,).
    """

    def __init__(self, epsilon=1e-5, rho_init=0.9, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if not float(epsilon) > 0.0:
            raise ValueError(f"AdaptiveLayerInstanceNorm: epsilon must be > 0, got {epsilon!r}.")
        self.epsilon = float(epsilon)
        self.rho_init = float(rho_init)

    def build(self, input_shape):
        self.rho = self.add_weight(name="rho", shape=(int(input_shape[-1]),),
                                   initializer=keras.initializers.Constant(self.rho_init))

    def call(self, inputs, gamma, beta):
        out = layer_instance_normalize(inputs, self.rho, self.epsilon)
        gamma = tf.cast(gamma, tf.float32)[:, tf.newaxis, tf.newaxis, :]
        beta = tf.cast(beta, tf.float32)[:, tf.newaxis, tf.newaxis, :]
        return tf.cast(out * gamma + beta, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon, "rho_init": self.rho_init})
        return config


@keras.saving.register_keras_serializable(package="networks")
class LayerInstanceNorm(_RhoMixin, keras.layers.Layer):
    """ILN (U-GAT-IT decoder up-sampling): (rho * IN(x) + (1 - rho) * LN(x)) * gamma + beta
    with learned gamma (init 1), beta (init 0) of shape (C,) and rho init 0.0.

    Input shape: (N, H, W, C). Output: same. Weights: rho, gamma, beta (C,).
    """

    def __init__(self, epsilon=1e-5, rho_init=0.0, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if not float(epsilon) > 0.0:
            raise ValueError(f"LayerInstanceNorm: epsilon must be > 0, got {epsilon!r}.")
        self.epsilon = float(epsilon)
        self.rho_init = float(rho_init)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.rho = self.add_weight(name="rho", shape=(channels,),
                                   initializer=keras.initializers.Constant(self.rho_init))
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        out = layer_instance_normalize(inputs, self.rho, self.epsilon)
        return tf.cast(out * self.gamma + self.beta, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon, "rho_init": self.rho_init})
        return config

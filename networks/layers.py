"""Building blocks of ProGAN, StyleGAN and StyleGAN2, NHWC (official code: NCHW).

Reads top-down from ops to layers: fade-in and normalisation ops, resampling (nearest / box /
blur for ProGAN and StyleGAN v1, FIR `upfirdn2d` for StyleGAN2), convolution with resampling,
then the Keras layers with weights: equalized-learning-rate dense and conv, minibatch stddev,
noise inputs, AdaIN style modulation (StyleGAN v1) and modulated convolution (StyleGAN2).
Behaviour follows `../shared/reference/stylegan.md`.

Mixed precision: every layer here is created with `autocast=False` and casts for itself. Weights
are scaled by their equalized-LR coefficient in float32 and only then cast to the compute dtype;
pixel norm, instance norm, minibatch stddev, styles and demodulation coefficients are computed in
float32 (the official TF code does the same for its float16 paths).

Weight layouts: dense [in, out]; conv HWIO [kh, kw, in, out].
"""

import contextlib
import functools
import math

import keras
import numpy as np
import tensorflow as tf

LRELU_SLOPE = 0.2
ACTIVATIONS = ("linear", "lrelu", "relu")
# act(x) * g = act(x * g) for g > 0 (positively homogeneous), so a layer can scale its weights
# and bias by the output gain instead of its output: one pass over the activations and one over
# their gradient fewer per layer (fold_gain).
HOMOGENEOUS_ACTIVATIONS = frozenset(ACTIVATIONS)
NOISE_MODES = ("const", "random", "none")
SQRT2 = math.sqrt(2.0)

#----------------------------------------------------------------------------
# Small ops.


def lerp(a, b, t):
    """a + (b - a) * t, with t cast to a's dtype."""
    return a + (b - a) * tf.cast(t, a.dtype)


def lerp_clip(a, b, t):
    """a + (b - a) * clip(t, 0, 1): the fade-in of progressive growing."""
    return lerp(a, b, tf.clip_by_value(tf.cast(t, tf.float32), 0.0, 1.0))


def pixel_norm(x, epsilon=1e-8):
    """x * rsqrt(mean(x^2 over channels) + eps), computed in float32 (eps underflows in float16)."""
    x32 = tf.cast(x, tf.float32)
    y = x32 * tf.math.rsqrt(tf.reduce_mean(tf.square(x32), axis=-1, keepdims=True) + epsilon)
    return tf.cast(y, x.dtype)


def instance_norm(x, epsilon=1e-8):
    """Per sample and channel: (x - mean_HW) * rsqrt(mean_HW((x - mean)^2) + eps), in float32."""
    x32 = tf.cast(x, tf.float32)
    x32 -= tf.reduce_mean(x32, axis=[1, 2], keepdims=True)
    x32 *= tf.math.rsqrt(tf.reduce_mean(tf.square(x32), axis=[1, 2], keepdims=True) + epsilon)
    return tf.cast(x32, x.dtype)


@tf.custom_gradient
def leaky_relu(x):
    """max(x, 0.2 x) (LRELU_SLOPE), any shape and dtype, whose gradient reads the output.

    The same numbers as tf.nn.leaky_relu and its gradient, first and second order (y > 0 exactly
    where x > 0, the slope being positive). Why: with oneDNN, grappler's remapper fuses Conv2D +
    BiasAdd + LeakyRelu into one kernel and removes the BiasAdd, which LeakyReluGrad still reads
    as its `features`; TensorFlow 2.21 then logs "remapper failed: ... fanout .../LeakyReluGrad
    exist for missing node .../BiasAdd" and drops the remapper's work on every training graph of
    the StyleGAN family and U-GAT-IT (whose discriminators use this too). Fed the output (as
    ReluGrad is), the fusion is sound. The features are a constant to the gradient's own
    gradient (R1's double back-propagation): the second derivative of a piecewise linear
    function is 0, and tf.nn.leaky_relu's would differentiate it through the forward op,
    bringing the BiasAdd read back.
    """
    y = tf.nn.leaky_relu(x, LRELU_SLOPE)

    def gradient(upstream):
        return tf.raw_ops.LeakyReluGrad(gradients=upstream, features=tf.stop_gradient(y),
                                        alpha=LRELU_SLOPE)

    return y, gradient


@tf.custom_gradient
def unfused_relu(x):
    """max(x, 0), any shape and dtype: tf.nn.relu's numbers and gradient (ReluGrad, 0 at x = 0),
    computed by a Maximum op that grappler's remapper leaves alone.

    For the ReLU of a residual sum that has other readers (BigGAN's discriminator: the next
    block's pre-activation ReLU and its shortcut, or the FQ look-up, both read the sum). With
    oneDNN the remapper fuses Conv2D + BiasAdd + Add + Relu into one kernel and removes the Add
    even when something else reads it; TensorFlow 2.21 then logs "remapper failed: ... fanout
    ... exist for missing node .../add" and drops the remapper's work on the whole graph. The
    second derivative is 0 (piecewise linear), so the output is a constant to the gradient's
    own gradient, as for `leaky_relu`.
    """
    y = tf.maximum(x, tf.zeros((), x.dtype))

    def gradient(upstream):
        return tf.raw_ops.ReluGrad(gradients=upstream, features=tf.stop_gradient(y))

    return y, gradient


def activate(x, activation):
    if activation == "lrelu":
        return leaky_relu(x)
    if activation == "relu":
        return tf.nn.relu(x)
    return x


def fold_gain(activation, gain):
    """(factor for the weights and bias, gain left after the activation) of a linear layer
    followed by `activation` and `gain`: (gain, 1) where the activation is positively
    homogeneous and gain a positive Python number, else (1, gain). act(x w + b) * g equals
    act(x (w g) + b g) up to float rounding (one product rounded differently per element)."""
    if activation in HOMOGENEOUS_ACTIVATIONS and isinstance(gain, (int, float)) and gain > 0:
        return float(gain), 1.0
    return 1.0, gain


def bias_act(x, bias=None, activation="linear", gain=1.0, clamp=None):
    """x + bias, activation, times gain, clamped to +-clamp (StyleGAN2 `bias_act`).

    x: (N, ..., C); bias: (C,). The bias is added with BiasAdd rather than a broadcasting add
    (the same float additions): grappler's remapper fuses Conv2D + BiasAdd (+ `leaky_relu`) into
    one kernel; on Conv2D + Add + LeakyRelu it failed the same way as `leaky_relu` explains
    ("remapper failed: ... missing node .../add").
    """
    if bias is not None:
        x = tf.nn.bias_add(x, tf.cast(bias, x.dtype))
    x = activate(x, activation)
    if gain != 1:
        x = x * tf.cast(gain, x.dtype)
    if clamp is not None:
        x = tf.clip_by_value(x, -tf.cast(clamp, x.dtype), tf.cast(clamp, x.dtype))
    return x


def num_features(stage, fmap_base, fmap_decay=1.0, fmap_min=1, fmap_max=512):
    """Official nf(stage) = clip(int(fmap_base / 2^(stage * fmap_decay)), fmap_min, fmap_max).

    A layer working at resolution R has stage log2(R) - 1 (so nf(1) is the 4x4 width).
    """
    return int(np.clip(int(fmap_base / (2.0 ** (stage * fmap_decay))), fmap_min, fmap_max))


def check_int(value, name, minimum):
    """int(value) for an integer (Python or numpy, not bool) >= minimum; ValueError naming
    `name` otherwise (constructor arguments of every network module)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_choice(value, choices, name):
    """`value` if it is one of `choices`; ValueError naming `name` otherwise."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
    return value


def check_resolution(resolution, name="resolution"):
    """Returns log2(resolution); resolution must be a power of two >= 4."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or \
            resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"{name} must be a power of two >= 4, got {resolution!r}.")
    return int(resolution).bit_length() - 1


def check_stage(resolution, full_resolution, progressive, who):
    """Validated static stage resolution of a progressive network (full resolution when None).

    The stage is a Python int fixed when a step is traced: only layers up to it are built into
    the graph, so an R x R stage costs what an R x R network costs.
    """
    if resolution is None:
        return full_resolution
    check_resolution(resolution, f"{who}: resolution")
    if resolution > full_resolution:
        raise ValueError(f"{who}: resolution {resolution} exceeds the network's "
                         f"{full_resolution}.")
    if resolution != full_resolution and not progressive:
        raise ValueError(f"{who}: resolution {resolution} given to a fixed-resolution network "
                         f"({full_resolution}); build it with progressive=True.")
    return int(resolution)


def fade_coefficient(lod, full_resolution, stage):
    """t = clip(lod - (log2 R - log2 stage), 0, 1), float32 scalar: the fade-in of `stage`.

    Within a stage lod runs from log2 R - log2 stage + 1 (t = 1: the previous stage's output)
    down to log2 R - log2 stage (t = 0: the stage's own output), as the official `lerp_clip`
    with lod_in - lod.
    """
    offset = float(check_resolution(full_resolution) - check_resolution(stage))
    return tf.clip_by_value(tf.cast(lod, tf.float32) - offset, 0.0, 1.0)


def _spatial(x):
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    if h is None or w is None or c is None:
        raise ValueError(f"Height, width and channels must be static, got shape {tuple(x.shape)}.")
    return h, w, c

#----------------------------------------------------------------------------
# Resampling. ProGAN / StyleGAN v1: nearest, 2x2 box and [1,2,1] blur. StyleGAN2: FIR.


def upscale2d(x, factor=2):
    """Nearest-neighbour upsampling (ProGAN / StyleGAN v1 `upscale2d`; U-GAT-IT's
    `nn.Upsample(scale_factor=2)`): (N, H, W, C) -> (N, H * factor, W * factor, C).

    One reshape, tile, reshape (a handful of graph ops with their gradient, where `tf.repeat`
    builds ~100); H and W may be dynamic, C must be static.
    """
    if factor == 1:
        return x
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    if c is None:
        raise ValueError(f"Channels must be static, got shape {tuple(x.shape)}.")
    if h is None or w is None:
        h, w = tf.shape(x)[1], tf.shape(x)[2]
    x = tf.reshape(x, [-1, h, 1, w, 1, c])
    x = tf.tile(x, [1, 1, factor, 1, factor, 1])
    return tf.reshape(x, [-1, h * factor, w * factor, c])


def downscale2d(x, factor=2):
    """Box-filter downsampling: mean over factor x factor blocks (`downscale2d`)."""
    if factor == 1:
        return x
    return tf.nn.avg_pool2d(x, factor, factor, "VALID")


def setup_filter(kernel, gain=1.0):
    """FIR kernel, float32 2-D: outer product of a 1-D kernel, normalised to sum 1, times gain."""
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {k.shape}.")
    k = k / np.sum(k)
    return (k * gain).astype(np.float32)


def _depthwise(x, kernel2d, stride=1):
    """sum_ab x[i * stride + a, j * stride + b] kernel2d[a, b] per channel (valid part): NHWC
    x with static H, W, C; kernel2d float32 (k, k).

    In bfloat16 with stride > 1 its input gradient is `_depthwise_adjoint` (a stride-1
    depthwise convolution) instead of TensorFlow's DepthwiseConv2dNativeBackpropInput, which
    oneDNN runs 5x slower there (8x34x34x64, 4x4 kernel, stride 2: 4.55 against 0.89 ms; the
    same bits) and which took 39% of the StyleGAN2 demo's kernel time in mixed_bfloat16 (Intel
    Xeon family 6 model 167, 2 cores, 2026-12-07). In float32 and at stride 1 TensorFlow's
    own is as fast or faster (0.48 against 1.07 ms in float32), so it stays.
    """
    c = x.shape[-1]
    w = tf.constant(np.tile(kernel2d[:, :, np.newaxis, np.newaxis], [1, 1, c, 1]), dtype=x.dtype)

    def forward(x):
        return tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], "VALID")

    if stride == 1 or x.dtype != tf.bfloat16:
        return forward(x)

    @tf.custom_gradient
    def strided(x):
        return forward(x), lambda dy: _depthwise_adjoint(dy, kernel2d, stride, _spatial(x)[:2])

    return strided(x)


def _depthwise_adjoint(dy, kernel2d, stride, size):
    """The input gradient of `_depthwise(x, kernel2d, stride)` for x of spatial `size` (h, w):

        dx[p, q] = sum_ij dy[i, j] kernel2d[p - i * stride, q - j * stride]

    = dy with stride - 1 zeros inserted between its rows and columns, padded by k - 1 on each
    side, correlated (stride 1) with the flipped kernel, and zero rows / columns appended where
    the forward pass's windows did not reach (H - k not a multiple of the stride). Built from
    differentiable ops, so R1 and path length differentiate through it again.
    """
    k = kernel2d.shape[0]
    before, after = k - 1, k - 1
    if stride > 1:
        dy = _insert_zeros(dy, stride)
        # The last stride - 1 rows and columns are inserted zeros: they stand for part of the
        # padding after when k >= stride (every FIR resampling here), else they are cropped.
        after -= stride - 1
        if after < 0:
            dy = dy[:, :after, :after, :]
            after = 0
    dy = tf.pad(dy, [[0, 0], [before, after], [before, after], [0, 0]])
    dx = _depthwise(dy, np.ascontiguousarray(kernel2d[::-1, ::-1]))
    h, w = size
    return tf.pad(dx, [[0, 0], [0, h - dx.shape[1]], [0, w - dx.shape[2]], [0, 0]])


def _insert_zeros(x, factor):
    """(N, H, W, C) -> (N, H * factor, W * factor, C): x[:, i, j] at (i * factor, j * factor),
    factor - 1 zero rows and columns after each (upfirdn2d's upsampling)."""
    h, w, c = _spatial(x)
    x = tf.reshape(x, [-1, h, 1, w, 1, c])
    x = tf.pad(x, [[0, 0], [0, 0], [0, factor - 1], [0, 0], [0, factor - 1], [0, 0]])
    return tf.reshape(x, [-1, h * factor, w * factor, c])


def in_xla_context():
    """True while tracing inside `tf.function(jit_compile=True)` (or another XLA context)."""
    try:
        from tensorflow.python.ops import control_flow_util  # private, stable since TF 1.x
    except ImportError:
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _correlate_1d(x, taps, axis, stride):
    """sum_a taps[a] * x[i * stride + a] along `axis` (valid part): shifted slices, no conv op.

    Used for separable FIR filters under XLA, whose CPU backend runs depthwise convolutions
    ~20x slower than these element-wise ops; without XLA the depthwise convolution (oneDNN) is
    ~10x faster than the slices (measured on 8x34x34x32, forward + backward).
    """
    k = len(taps)
    size = x.shape[axis]
    out = (size - k) // stride + 1
    total = None
    for a, tap in enumerate(taps):
        if tap == 0:
            continue
        index = [slice(None)] * 4
        index[axis] = slice(a, a + stride * (out - 1) + 1, stride)
        term = x[tuple(index)] * tf.constant(tap, x.dtype)
        total = term if total is None else total + term
    return total


def _separable_taps(kernel):
    """1-D taps of a separable kernel (1-D input), or None for a 2-D kernel."""
    k = np.asarray(kernel, dtype=np.float64)
    return k / np.sum(k) if k.ndim == 1 else None


def blur2d(x, kernel=(1, 2, 1)):
    """StyleGAN v1 blur: normalised outer-product kernel, true convolution, SAME padding."""
    p = (len(kernel) - 1) // 2
    return upfirdn2d(x, kernel, padding=(p, len(kernel) - 1 - p))


def upfirdn2d(x, kernel, up=1, down=1, padding=(0, 0), gain=1.0, flip_filter=False):
    """Upsample (zero insertion), pad, FIR-filter, downsample: StyleGAN2's `upfirdn2d`, NHWC.

    Args:
      x: (N, H, W, C), static H, W, C.
      kernel: 1-D separable or 2-D FIR kernel (normalised to sum 1 by `setup_filter`).
      up, down: integer factors.
      padding: (before, after) for both H and W, after upsampling; negative values crop.
      gain: multiplies the kernel (upsampling by 2 uses 4 to keep the signal's magnitude).
      flip_filter: False = true convolution (kernel flipped, as the reference), True = correlation.

    Output shape:
      (N, (H*up + before + after - k) // down + 1, ..., C).

    Implementation: a depthwise convolution, or under XLA, for a 1-D (separable) kernel, two
    1-D passes of shifted slices (same result; see `_correlate_1d` for why).
    """
    _spatial(x)   # static H, W, C or a clear error
    if up > 1:
        x = _insert_zeros(x, up)
    p0, p1 = padding
    if p0 > 0 or p1 > 0:
        pads = [max(p0, 0), max(p1, 0)]
        x = tf.pad(x, [[0, 0], pads, pads, [0, 0]])
    if p0 < 0 or p1 < 0:
        size = x.shape[1]
        x = x[:, max(-p0, 0):size - max(-p1, 0), max(-p0, 0):size - max(-p1, 0), :]
    taps = _separable_taps(kernel)
    if taps is not None and in_xla_context():
        taps = taps * math.sqrt(gain)
        if not flip_filter:
            taps = taps[::-1]
        x = _correlate_1d(x, taps, 1, down)
        return _correlate_1d(x, taps, 2, down)
    f = setup_filter(kernel, gain)
    if not flip_filter:
        f = f[::-1, ::-1]
    return _depthwise(x, np.ascontiguousarray(f), stride=down)


def upsample_2d(x, kernel=(1, 3, 3, 1), factor=2):
    """FIR upsampling by `factor` (StyleGAN2 `upsample_2d`): pads ((p+1)//2 + factor-1, p//2)."""
    p = len(kernel) - factor
    return upfirdn2d(x, kernel, up=factor, padding=((p + 1) // 2 + factor - 1, p // 2),
                     gain=factor ** 2)


def downsample_2d(x, kernel=(1, 3, 3, 1), factor=2):
    """FIR downsampling by `factor` (StyleGAN2 `downsample_2d`): pads ((p+1)//2, p//2)."""
    p = len(kernel) - factor
    return upfirdn2d(x, kernel, down=factor, padding=((p + 1) // 2, p // 2))

#----------------------------------------------------------------------------
# Convolution with optional resampling.


def _conv_transpose(x, w_t, stride, out_hw, padding):
    """tf.nn.conv2d_transpose with a dynamic batch; w_t is [kh, kw, out, in]."""
    out_channels = w_t.shape[2]
    shape = tf.stack([tf.shape(x)[0], out_hw[0], out_hw[1], out_channels])
    y = tf.nn.conv2d_transpose(x, w_t, shape, stride, padding)
    return tf.ensure_shape(y, [None, out_hw[0], out_hw[1], out_channels])


def _zero_insert(x):
    """(N, H, W, C) -> (N, 2H-1, 2W-1, C): x at even positions, zeros between (the input
    side of a stride-2 transposed convolution run as a forward one)."""
    h, w, c = _spatial(x)
    y = tf.pad(x[:, :, tf.newaxis, :, tf.newaxis, :],
               [[0, 0], [0, 0], [0, 1], [0, 0], [0, 1], [0, 0]])  # [N,H,2,W,2,C]
    return tf.reshape(y, [-1, 2 * h, 2 * w, c])[:, :2 * h - 1, :2 * w - 1, :]


def _pad_and_sum_shifts(w):
    """ProGAN / StyleGAN v1 fused resampling kernel: pad by 1 and sum the 4 shifted copies."""
    w = tf.pad(w, [[1, 1], [1, 1], [0, 0], [0, 0]])
    return w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags (frozenset of names as the kernel lists them, e.g. "avx512f",
    "amx_bf16"), from the kernel's CPU information (Linux; empty where it cannot be read)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def onednn_enabled():
    """Whether this process runs TensorFlow's oneDNN CPU kernels (TensorFlow's own query)."""
    from tensorflow.python.util import _pywrap_util_port
    return bool(_pywrap_util_port.IsMklEnabled())


def products_win(gpu, onednn, flags):
    """The rule of `matmul_filter_gradients`: whether the filter gradients go faster as matrix
    products than as TensorFlow's Conv2DBackpropFilter, given a visible GPU (`gpu`), oneDNN's
    CPU kernels on (`onednn`) and the CPU's feature flags (`flags`, as `cpu_flags`).

    Forward + both gradients of a 3x3 convolution, batch 32, 64-256 channels, 8x8 to 64x64
    (the StyleGAN2 shapes of bench_peer's setting): on a 2-core AMD EPYC with AVX2 only
    (oneDNN or Eigen) TensorFlow's filter gradient ran at about half the speed of its forward
    convolution, the products at 1.4-1.8x its GFLOP/s (2026-12-06); on a 2-core Intel Xeon with
    AVX-512 (and AMX), oneDNN's own was faster: 295-337 GFLOP/s against the products' 195-271,
    0.66-0.81x the time (2026-12-07). cuDNN's filter gradients are fast on GPUs. An AVX-512
    AMD (Zen 4) was not measured; it follows the AVX-512 rule."""
    return not gpu and not (onednn and "avx512f" in flags)


@functools.cache
def matmul_filter_gradients():
    """Whether `conv2d_same`, `conv2d_stride2` and `conv2d_stride2_transpose` take their filter
    gradients by matrix products here (one answer per process): on CPUs, except with oneDNN on
    an AVX-512 CPU (`products_win`). `filter_gradients` overrides it."""
    return products_win(bool(tf.config.list_physical_devices("GPU")), onednn_enabled(),
                        cpu_flags())


FILTER_GRADIENTS = ("products", "native")
_forced_filter_gradients = None


@contextlib.contextmanager
def filter_gradients(kind):
    """Within it, `conv2d_same` and the stride-2 convolutions trace `kind` filter gradients:
    "products" (matrix products, in float32 with a static height and width; TensorFlow's own
    elsewhere) or "native" (TensorFlow's own), whatever this machine's default
    (`matmul_filter_gradients`); None leaves the choice as it was. Benchmarks time both; tests
    check both on every machine."""
    global _forced_filter_gradients
    if kind not in FILTER_GRADIENTS + (None,):
        raise ValueError(f"filter_gradients: {kind!r} is not one of {FILTER_GRADIENTS}.")
    previous = _forced_filter_gradients
    _forced_filter_gradients = kind or previous
    try:
        yield
    finally:
        _forced_filter_gradients = previous


def default_filter_gradients():
    """This machine's kind of filter gradients: "products" or "native"."""
    return "products" if matmul_filter_gradients() else "native"


def other_filter_gradients():
    """The kind of filter gradients this machine does not use by default (benchmarks)."""
    return next(kind for kind in FILTER_GRADIENTS if kind != default_filter_gradients())


def conv2d_same(x, w):
    """tf.nn.conv2d(x, w, 1, 'SAME') for an odd square kernel: the same forward op, and where
    the products win (`matmul_filter_gradients`: CPUs without oneDNN's AVX-512 kernels) in
    float32 gradients of every order by `_conv2d_same`'s rules, the filter gradient as one
    matrix product (`conv2d_same_filter_grad`); TensorFlow's own gradients elsewhere (GPUs
    and reduced precision, where the product was not measured; oneDNN on AVX-512, where it
    is slower; a dynamic height or width).

    x: (N, H, W, I); w: (k, k, I, O) in x's dtype. Output (N, H, W, O).
    """
    if w.shape[0] % 2 == 0 or not _product_filter_gradients(x):
        return tf.nn.conv2d(x, w, 1, "SAME")
    return _conv2d_same(x, tf.convert_to_tensor(w))


def _product_filter_gradients(x):
    """Whether a convolution of x traces the matrix-product filter gradients: float32, static
    height and width, and products chosen (`filter_gradients`, else this machine's default)."""
    kind = _forced_filter_gradients or default_filter_gradients()
    return x.dtype == tf.float32 and None not in x.shape[1:] and kind == "products"


@tf.custom_gradient
def _conv2d_same(x, w):
    """y = conv(x, w), stride 1, 'same' padding p = k // 2. Gradients for upstream dy:
    x: the transposed convolution of dy (`_conv2d_same_transpose`, TensorFlow's
    Conv2DBackpropInput); w: `conv2d_same_filter_grad(x, dy)`."""
    def gradient(dy):
        return _conv2d_same_transpose(dy, w), conv2d_same_filter_grad(x, dy, w.shape[0])

    return tf.nn.conv2d(x, w, 1, "SAME"), gradient


@tf.custom_gradient
def _conv2d_same_transpose(dy, w):
    """dx[n, h, w, c] = sum_{i, j, o} dy[n, h+p-i, w+p-j, o] w[i, j, c, o], the gradient of
    `_conv2d_same` by its input. Its own gradients for upstream g (R1 and path length
    differentiate it again): dy: conv(g, w); w: `conv2d_same_filter_grad(g, dy)` (substitute
    h' = h + p - i in the sum), so second-order terms take the matrix product too."""
    sizes = tf.concat([tf.shape(dy)[:3], [w.shape[2]]], axis=0)
    dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=sizes, filter=w, out_backprop=dy,
                                        strides=[1, 1, 1, 1], padding="SAME")

    def gradient(g):
        return _conv2d_same(g, w), conv2d_same_filter_grad(g, dy, w.shape[0])

    return dx, gradient


def conv2d_same_filter_grad(x, dy, k):
    """Filter gradient of a stride-1 'same' k x k convolution as one matrix product:

        dW[i, j, c, o] = sum_{n, h, w} xp[n, h+i, w+j, c] dy[n, h, w, o],   xp = x padded by k//2.

    With xs = the k column shifts of xp side by side (N, H+2p, W, k I) and ds = the k row
    shifts of dy, zero-padded to H+2p rows (N, H+2p, W, k O), the product xs^T ds (k I, k O)
    holds every block: row block j (column shift), column block i (row shift) is dW[i, j].
    (H+2p)/H times the convolution's multiply-adds (1.06 at 32x32, 1.5 at 4x4), but at a
    matrix product's speed: on a 2-core AMD EPYC, Conv2DBackpropFilter ran at 48-70 GFLOP/s
    where its forward convolution ran at 139 (64x64, 64 channels, batch 32) and a product of
    this shape at 120-130; forward + both gradients 1.4-1.8x the GFLOP/s (3x3, 64-256 channels,
    16x16 to 64x64). Under the name scope `conv_filter_grad` (bench_peer counts its FLOPs as
    the convolution's).

    x: (N, H, W, I), dy: (N, H, W, O), same dtype. Returns (k, k, I, O).
    """
    with tf.name_scope("conv_filter_grad"):
        p = k // 2
        w_out = x.shape[2]
        i, o = x.shape[3], dy.shape[3]
        xp = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]]) if p else x
        xs = tf.concat([xp[:, :, j:j + w_out, :] for j in range(k)], axis=-1) if k > 1 else xp
        ds = tf.concat([tf.pad(dy, [[0, 0], [r, k - 1 - r], [0, 0], [0, 0]]) for r in range(k)],
                       axis=-1) if k > 1 else dy
        blocks = tf.matmul(tf.reshape(xs, [-1, k * i]), tf.reshape(ds, [-1, k * o]),
                           transpose_a=True)                       # [(j, I), (i, O)]
        return tf.transpose(tf.reshape(blocks, [k, i, k, o]), [2, 0, 1, 3])


def conv2d_stride2(x, w):
    """tf.nn.conv2d(x, w, 2, 'VALID'), StyleGAN2's downsampling convolution after its FIR
    filter: the same forward op, and where the products win in float32 gradients of every
    order by `_conv2d_stride2`'s rules, the filter gradient by matrix products
    (`conv2d_stride2_filter_grad`); TensorFlow's own gradients elsewhere (as `conv2d_same`).

    x: (N, Hx, Wx, I); w: (k, k, I, O) in x's dtype. Output (N, (Hx - k) // 2 + 1, ..., O).
    """
    if not _product_filter_gradients(x):
        return tf.nn.conv2d(x, w, 2, "VALID")
    return _conv2d_stride2(x, tf.convert_to_tensor(w))


def conv2d_stride2_transpose(x, w_t, out_hw):
    """The transposed stride-2 'VALID' convolution, StyleGAN2's upsampling convolution before
    its FIR filter: y[n, 2h+i, 2w+j, o] += x[n, h, w, c] w_t[i, j, o, c]. Gradients as
    `conv2d_stride2`'s (the two are each other's input gradient).

    x: (N, H, W, C); w_t: (k, k, O, C); out_hw: (Hy, Wy), 2(H-1)+k or one more. Output
    (N, Hy, Wy, O).
    """
    if not _product_filter_gradients(x):
        return _conv_transpose(x, w_t, 2, out_hw, "VALID")
    return _conv2d_stride2_transpose(x, tf.convert_to_tensor(w_t), tuple(out_hw))


@tf.custom_gradient
def _conv2d_stride2(x, w):
    """y = conv(x, w), stride 2, 'valid'. Gradients for upstream dy: x: the transposed
    convolution of dy back to x's size (`_conv2d_stride2_transpose`); w:
    `conv2d_stride2_filter_grad(x, dy)`."""
    def gradient(dy):
        return (_conv2d_stride2_transpose(dy, w, tuple(x.shape[1:3])),
                conv2d_stride2_filter_grad(x, dy, w.shape[0]))

    return tf.nn.conv2d(x, w, 2, "VALID"), gradient


def _conv2d_stride2_transpose(dy, w, out_hw):
    """dx[n, 2h+i, 2w+j, c] += dy[n, h, w, o] w[i, j, c, o] on an (out_hw) grid: the gradient
    of `_conv2d_stride2` by its input, and StyleGAN2's upsampling convolution. Its own
    gradients for upstream g (R1 and path length differentiate it again): dy: conv_s2(g, w);
    w: `conv2d_stride2_filter_grad(g, dy)` (the sum of g dx over the grid)."""
    @tf.custom_gradient
    def transpose(dy, w):
        def gradient(g):
            return _conv2d_stride2(g, w), conv2d_stride2_filter_grad(g, dy, w.shape[0])

        return _conv_transpose(dy, w, 2, out_hw, "VALID"), gradient

    return transpose(dy, w)


def conv2d_stride2_filter_grad(x, dy, k):
    """Filter gradient of a stride-2 'valid' k x k convolution by k matrix products:

        dW[i, j, c, o] = sum_{n, h, w} x[n, 2h+i, 2w+j, c] dy[n, h, w, o].

    With q = (k-1) // 2, x zero-padded (or cropped) to 2(H+q) x 2(W+q) and split by row and
    column parity, plane a holds the k column taps side by side, P_a[n, h', w, (j, c)] =
    x[n, 2h'+a, 2w+j, c] (N, H+q, W, k I), and row tap i = 2s + a is plane a shifted by s rows.
    Flattened, a shift by s rows is an offset of s W rows, so with D = dy padded by q zero rows
    per sample (N (H+q) W, O), dW[i] = P_a[s W : s W + L]^T D[:L] (k I, O), L = N (H+q) W - q W:
    (H+q)/H times the convolution's multiply-adds (plus the parity planes' one copy of x),
    where TensorFlow's Conv2DBackpropFilter with stride 2 ran at 45-75 GFLOP/s against its
    forward convolution's 100-125 (2-core AMD EPYC, oneDNN, the reference setting's D).
    Under the name scope `conv_filter_grad`, as `conv2d_same_filter_grad`.

    x: (N, Hx, Wx, I), dy: (N, H, W, O) with H = (Hx - k) // 2 + 1 (W alike), same dtype.
    Returns (k, k, I, O).
    """
    with tf.name_scope("conv_filter_grad"):
        q = (k - 1) // 2
        (hx, wx, i), (h, w, o) = x.shape[1:], dy.shape[1:]
        rows, cols = 2 * (h + q), 2 * (w + q)
        if hx > rows or wx > cols:
            x = x[:, :rows, :cols]
        x = tf.pad(x, [[0, 0], [0, rows - x.shape[1]], [0, cols - x.shape[2]], [0, 0]])
        x = tf.reshape(x, [-1, h + q, 2, w + q, 2, i])       # [n, h', a, w', b, c]
        planes = [tf.reshape(tf.concat([x[:, :, a, j // 2:j // 2 + w, j % 2] for j in range(k)],
                                       axis=-1), [-1, k * i]) for a in range(min(k, 2))]
        d = tf.reshape(tf.pad(dy, [[0, 0], [0, q], [0, 0], [0, 0]]), [-1, o])
        length = tf.shape(d)[0] - q * w
        d = d[:length]
        blocks = [tf.matmul(planes[r % 2][r // 2 * w:r // 2 * w + length], d, transpose_a=True)
                  for r in range(k)]                        # dW[r] as [(j, c), o]
        return tf.reshape(tf.stack(blocks), [k, k, i, o])


def conv2d_resample(x, w, up=False, down=False, resample_kernel=None, fused_scale=False):
    """2-D convolution ('same' size for odd kernels) with optional 2x up- or downsampling.

    Args:
      x: (N, H, W, I) input.
      w: HWIO kernel (kh, kw, I, O) in x's dtype, already scaled.
      up, down: resample by 2 (not both).
      resample_kernel: StyleGAN2 FIR kernel (e.g. (1, 3, 3, 1)) or None for ProGAN / StyleGAN v1.
        FIR up: transposed stride-2 convolution with the spatially flipped kernel, then the FIR
        filter (gain 4), as the official `upsample_conv_2d`; FIR down: FIR filter then stride-2
        convolution (`conv_downsample_2d`).
      fused_scale: only without resample_kernel. True = one transposed / strided convolution
        with the kernel padded by 1 and its 4 shifts summed (x 1/4 for down), which equals
        nearest-upsample + conv with the flipped kernel, or conv + 2x2 average.
        False = nearest-upsample then conv, or conv then 2x2 average.

    Output shape:
      (N, 2H, 2W, O) if up, (N, H/2, W/2, O) if down, else (N, H, W, O).
    """
    if up and down:
        raise ValueError("conv2d_resample: up and down are exclusive.")
    h, wd = x.shape[1], x.shape[2]
    k = w.shape[0]
    if up and resample_kernel is not None:
        if k == 1:  # 1x1 kernel: the convolution commutes with the upsampling.
            return upsample_2d(conv2d_same(x, w), resample_kernel)
        # tf.reverse, not w[::-1, ::-1]: a negative-stride StridedSlice (and its gradient)
        # takes ~90 us on a 3x3x32x32 kernel on CPU, ReverseV2 ~5 us (the same values).
        w_t = tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2])
        x = conv2d_stride2_transpose(x, w_t, ((h - 1) * 2 + k, (wd - 1) * 2 + k))
        p = (len(resample_kernel) - 2) - (k - 1)
        return upfirdn2d(x, resample_kernel, padding=((p + 1) // 2 + 1, p // 2 + 1), gain=4)
    if up:
        if fused_scale:
            w_t = _pad_and_sum_shifts(tf.transpose(w, [0, 1, 3, 2]))
            return _conv_transpose(x, w_t, 2, (h * 2, wd * 2), "SAME")
        return conv2d_same(upscale2d(x), w)
    if down and resample_kernel is not None:
        if k == 1:  # The 1x1 convolution commutes with the downsampling: filter a quarter of
            # the positions (stylegan2-ada-pytorch's fast path; the same sums).
            return conv2d_same(downsample_2d(x, resample_kernel), w)
        p = (len(resample_kernel) - 2) + (k - 1)
        x = upfirdn2d(x, resample_kernel, padding=((p + 1) // 2, p // 2))
        return conv2d_stride2(x, w)
    if down:
        if fused_scale:
            return tf.nn.conv2d(x, _pad_and_sum_shifts(w) * 0.25, 2, "SAME")
        return downscale2d(conv2d_same(x, w))
    return conv2d_same(x, w)


def modulated_conv2d(x, weight, styles, demodulate=True, up=False, resample_kernel=None,
                     fused=False, gain=1.0):
    """StyleGAN2 modulated convolution (without noise and bias), times `gain`.

        ww[b] = weight * styles[b]            (scale input channel i by s[b, i])
        d[b, o] = rsqrt(sum_{kh, kw, i} ww[b]^2 + 1e-8)     (demodulate)
        y[b] = conv(x[b], ww[b] * d[b]) * gain

    fused=True convolves each sample with its own modulated kernel (`per_sample_conv2d`, the
    official grouped convolution); fused=False scales the activations instead:
    conv(x * s) * d, the same up to float error. Styles and coefficients are float32. In
    float16 the kernel and styles are first divided by their max-norms (cancelled exactly by
    the demodulation), as the official PyTorch code does to avoid overflow.

    Args:
      x: (N, H, W, I) in the compute dtype.
      weight: float32 HWIO (k, k, I, O), already times its equalized-LR gain 1/sqrt(k*k*I).
      styles: float32 (N, I).
      demodulate: divide each output channel by the norm of its modulated kernel.
      up, resample_kernel: as `conv2d_resample` (StyleGAN2 up-conv with the FIR filter).
      fused: per-sample-kernel path (see above).
      gain: a Python number multiplying the output, applied to the (N, O) coefficients
        d * gain (or, without demodulation, to the kernel): no pass over the output.

    Returns:
      (N, H', W', O) in x's dtype.
    """
    dtype = x.dtype
    weight = tf.cast(weight, tf.float32)
    styles = tf.cast(styles, tf.float32)
    if demodulate and dtype == tf.float16:
        weight = weight / tf.reduce_max(tf.abs(weight), axis=[0, 1, 2], keepdims=True)
        styles = styles / tf.reduce_max(tf.abs(styles), axis=1, keepdims=True)
    if demodulate:
        # sum_{kh,kw,i} (w s_i)^2 = sum_i s_i^2 sum_{kh,kw} w^2: an (N, I) x (I, O) product, not
        # a reduction over the (N, k, k, I, O) modulated kernels (the same sums, regrouped).
        dcoefs = tf.math.rsqrt(tf.matmul(tf.square(styles),
                                         tf.reduce_sum(tf.square(weight), axis=[0, 1])) + 1e-8)
        if gain != 1:
            dcoefs = dcoefs * gain
    elif gain != 1:
        weight = weight * gain
    if not fused:
        x = x * tf.cast(styles[:, tf.newaxis, tf.newaxis, :], dtype)
        x = conv2d_resample(x, tf.cast(weight, dtype), up=up, resample_kernel=resample_kernel)
        if demodulate:
            x = x * tf.cast(dcoefs[:, tf.newaxis, tf.newaxis, :], dtype)
        return x
    ww = weight[tf.newaxis] * styles[:, tf.newaxis, tf.newaxis, :, tf.newaxis]  # [N,k,k,I,O]
    if demodulate:
        ww = ww * dcoefs[:, tf.newaxis, tf.newaxis, tf.newaxis, :]
    y = per_sample_conv2d(x, tf.cast(ww, dtype), up=up)
    if up:
        k = weight.shape[0]
        p = (len(resample_kernel) - 2) - (k - 1)
        y = upfirdn2d(y, resample_kernel, padding=((p + 1) // 2 + 1, p // 2 + 1), gain=4)
    return y


def per_sample_conv2d(x, ww, up=False):
    """Convolution of every sample with its own kernel: y[b] = conv(x[b], ww[b]).

    Where TensorFlow has grouped-convolution kernels with gradients (`grouped_convs_supported`:
    GPUs, oneDNN CPU builds) this is the official form, one grouped convolution with the batch
    folded into the groups. Elsewhere (TensorFlow's CPU kernels without oneDNN, the default on
    AVX2 machines, have neither a grouped transposed convolution nor grouped gradients) each
    sample's kernel is applied as one matrix product over its k*k*I patches (im2col): the same
    sums, measured 1.1-5x slower than oneDNN's grouped kernels (bench/bench_networks.py).

    Args:
      x: (N, H, W, I); N may be dynamic.
      ww: (N, k, k, I, O) per-sample HWIO kernels (odd k), x's dtype.
      up: the stride-2 transposed convolution of the official `upsample_conv_2d` (before its
        FIR filter), with the spatially flipped kernel: output (N, 2H+k-2, 2W+k-2, O).
        Otherwise 'same' padding: output (N, H, W, O).
    """
    if grouped_convs_supported():
        return _grouped_conv2d(x, ww, up)
    return _patch_conv2d(x, ww, up)


@functools.cache
def grouped_convs_supported():
    """Whether grouped Conv2D, Conv2DBackpropInput and Conv2DBackpropFilter all run here.

    A one-time probe on a 2-group 1x1 transposed convolution and both its gradients, run
    eagerly even while a tf.function traces (oneDNN is chosen when TensorFlow is imported, so
    one answer holds for the process).
    """
    with tf.init_scope():
        x, w = tf.ones([1, 2, 2, 2]), tf.ones([1, 1, 1, 2])
        try:
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                y = tf.nn.conv2d_transpose(x, w, [1, 2, 2, 2], 1, "VALID")
            tape.gradient(y, [x, w])
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            return False
    return True


def _grouped_conv2d(x, ww, up):
    """`per_sample_conv2d` as one grouped convolution (batch folded into the groups)."""
    h, w, i = _spatial(x)
    k, o = ww.shape[1], ww.shape[4]
    xg = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, h, w, -1])  # [1,H,W,N*I]
    if up:
        wt = tf.transpose(tf.reverse(ww, [1, 2]), [1, 2, 4, 0, 3])  # [k,k,O,N,I]
        wt = tf.reshape(wt, [k, k, o, -1])
        hw = (2 * h + k - 2, 2 * w + k - 2)
        y = tf.nn.conv2d_transpose(xg, wt, tf.stack([1, hw[0], hw[1], tf.shape(wt)[3] // i * o]),
                                   2, "VALID")
    else:
        hw = (h, w)
        y = tf.nn.conv2d(xg, tf.reshape(tf.transpose(ww, [1, 2, 3, 0, 4]), [k, k, i, -1]),
                         1, "SAME")  # kernel [k,k,I,N*O]
    y = tf.reshape(y, [hw[0], hw[1], -1, o])  # [H',W',N,O]
    return tf.transpose(y, [2, 0, 1, 3])


def _patch_conv2d(x, ww, up):
    """`per_sample_conv2d` as a batched matrix product over k*k*I patches (im2col).

    The up-convolution runs as zero insertion, padding by k-1 and the unflipped kernel: the
    same sums as the transposed convolution with the flipped kernel.
    """
    k, i, o = ww.shape[1], ww.shape[3], ww.shape[4]
    if up:
        x = tf.pad(_zero_insert(x), [[0, 0], [k - 1, k - 1], [k - 1, k - 1], [0, 0]])
    elif k > 1:
        x = tf.pad(x, [[0, 0], [k // 2, k // 2], [k // 2, k // 2], [0, 0]])
    if k > 1:  # [N, H', W', k*k*I], patch elements ordered (kh, kw, I) as ww's rows
        x = tf.image.extract_patches(x, [1, k, k, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID")
    h, w = x.shape[1], x.shape[2]
    y = tf.matmul(tf.reshape(x, [-1, h * w, k * k * i]), tf.reshape(ww, [-1, k * k * i, o]))
    return tf.reshape(y, [-1, h, w, o])


def minibatch_stddev(x, group_size=4, num_features=1):
    """Minibatch standard deviation (ProGAN), strided grouping, float32 inside.

    With G = min(group_size, N) and M = N / G, sample i belongs to group i mod M, i.e. group m
    holds samples {m, m+M, m+2M, ...}. Per group: std over its G samples of every feature
    (sqrt(var + 1e-8)), averaged over H, W and C / num_features channels; the result is tiled
    back to every sample of the group and concatenated as num_features new channels.

    Input (N, H, W, C) -> output (N, H, W, C + num_features). N must be divisible by G.
    """
    h, w, c = _spatial(x)
    if c % num_features:
        raise ValueError(f"minibatch_stddev: {c} channels are not divisible by "
                         f"num_features={num_features}.")
    n = x.shape[0]
    if n is not None:
        group = min(group_size, n)
        if n % group:
            raise ValueError(
                f"minibatch_stddev: batch size {n} is not divisible by the group size {group}. "
                f"Use a (per-replica) batch size that is a multiple of {group_size}, or change "
                "the discriminator's mbstd_group_size.")
    else:
        n_dyn = tf.shape(x)[0]
        group = tf.minimum(group_size, n_dyn)
        check = tf.debugging.assert_equal(
            n_dyn % group, 0, message=(
                f"minibatch_stddev: batch size is not divisible by the group size; use a "
                f"(per-replica) batch size that is a multiple of {group_size}, or change the "
                "discriminator's mbstd_group_size."))
        with tf.control_dependencies([check]):
            x = tf.identity(x)
    y = tf.reshape(tf.cast(x, tf.float32), [group, -1, h, w, num_features, c // num_features])
    y -= tf.reduce_mean(y, axis=0)
    y = tf.reduce_mean(tf.square(y), axis=0)
    y = tf.sqrt(y + 1e-8)
    y = tf.reduce_mean(y, axis=[1, 2, 4])  # [M, F]
    y = tf.reshape(y, [-1, 1, 1, num_features])
    y = tf.tile(y, [group, h, w, 1])
    return tf.concat([x, tf.cast(y, x.dtype)], axis=-1)

def replica_random(kind, shape, seed_generator, dtype=tf.float32):
    """This replica's rows of a random draw for the whole global batch (inside
    `BatchLanes.run`: this lane's rows of the replica's draw).

    Every replica holds the same `keras.random.SeedGenerator` state, so drawing the global
    batch (shape[0] * replicas rows) on each replica and keeping rows [r * n, (r + 1) * n)
    gives every replica its own numbers and, for N replicas, exactly the numbers one device
    draws for the global batch (so distributed runs equal single-device runs).

    Args:
      kind: "normal" (N(0, 1)) or "uniform" ([0, 1)).
      shape: this replica's (or lane's) shape, list of ints / scalar tensors, batch first.
      seed_generator: keras.random.SeedGenerator.
    """
    lanes = BatchLanes.active
    if lanes is not None:
        return lanes.rows(kind, shape, seed_generator, dtype)
    draw = keras.random.normal if kind == "normal" else keras.random.uniform
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return draw(shape, seed=seed_generator, dtype=dtype)
    replicas = context.num_replicas_in_sync
    n = shape[0]
    full = draw([n * replicas] + list(shape[1:]), seed=seed_generator, dtype=dtype)
    start = tf.cast(context.replica_id_in_sync_group, tf.int32) * n
    return full[start:start + n]


class BatchLanes:
    """A batch computed as `count` independent lanes (rows j, j + count, j + 2 count, ... in
    lane j), whose ops TensorFlow can run side by side: a serial chain of small ops on one
    thread each (a CPU-sized network) fills `count` cores instead of one.

        lanes = BatchLanes(2)
        images = lanes.merge([lanes.run(j, lambda: G.synthesis(ws[j::2])) for j in range(2)])

    Random draws through `replica_random` inside `run` give each lane its rows of the draw the
    whole batch makes (the first lane draws it, in the same order, and the others reuse it), so
    lanes change no random number; only sums over the batch (weight gradients) are summed in
    another order. Every lane must make the same draws in the same order (the same network).
    Strided rows keep minibatch-stddev groups (samples m, m + M, ... of M = N / G groups)
    whole when `count` divides M (`lanes_keep_groups`).
    """

    active = None   # the BatchLanes whose `run` is being traced

    def __init__(self, count):
        self.count = int(count)
        self._draws = []   # the whole batch's draws of the first lane, in order
        self._lane, self._position = None, 0

    def run(self, lane, fn):
        """fn() traced as lane `lane` (0 first: its draws are the ones the others reuse)."""
        if BatchLanes.active is not None:
            raise RuntimeError("BatchLanes.run: lanes do not nest.")
        BatchLanes.active, self._lane, self._position = self, lane, 0
        try:
            return fn()
        finally:
            BatchLanes.active, self._lane = None, None

    def rows(self, kind, shape, seed_generator, dtype):
        """This lane's rows of the whole batch's next draw (see class docstring)."""
        if self._lane == 0:
            BatchLanes.active = None   # the whole batch's draw, as without lanes
            try:
                self._draws.append(replica_random(
                    kind, [shape[0] * self.count] + list(shape[1:]), seed_generator, dtype))
            finally:
                BatchLanes.active = self
        elif self._position >= len(self._draws):
            raise RuntimeError("BatchLanes: a lane draws more random numbers than lane 0.")
        draw = self._draws[self._position]
        self._position += 1
        return draw[self._lane::self.count]

    def split(self, tensor):
        """The lanes' rows of a whole-batch tensor (n, ...): [rows j, j + count, ...] per lane
        (None for None, e.g. absent labels)."""
        return [None if tensor is None else tensor[j::self.count] for j in range(self.count)]

    def merge(self, tensors):
        """The lanes' (n / count, ...) tensors back in batch order: (n, ...)."""
        stacked = tf.stack(tensors, axis=1)   # [n / count, count, ...]
        return tf.reshape(stacked, tf.concat([[-1], tf.shape(stacked)[2:]], axis=0))


def lanes_keep_groups(batch, count, group_sizes):
    """Whether `count` strided lanes of a batch of `batch` keep every minibatch-stddev group
    whole: count divides M = batch / min(G, batch) for each group size G (>= 1) of the
    network (an empty `group_sizes`: any count dividing the batch)."""
    if count < 1 or batch % count:
        return False
    return all((batch // min(g, batch)) % count == 0 for g in group_sizes if g >= 1)

#----------------------------------------------------------------------------
# Layers with weights.


def _check_kernel_size(kernel_size, who):
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)) or \
            kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{who}: kernel_size must be a positive odd integer, got {kernel_size!r}.")


def _check_activation(activation, who):
    if activation not in ACTIVATIONS:
        raise ValueError(f"{who}: activation must be one of {ACTIVATIONS}, got {activation!r}.")


def _equalized_lr(fan_in, gain, lrmul, use_wscale):
    """(init stddev, runtime coefficient) of `get_weight`: he_std = gain / sqrt(fan_in)."""
    he_std = gain / math.sqrt(fan_in)
    if use_wscale:
        return 1.0 / lrmul, he_std * lrmul
    return he_std / lrmul, lrmul


class _EqualizedBase(keras.layers.Layer):
    """Shared configuration of equalized-learning-rate layers."""

    def __init__(self, gain, lrmul, use_wscale, use_bias, activation, activation_gain, clamp,
                 **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        name = type(self).__name__
        if not float(lrmul) > 0:
            raise ValueError(f"{name}: lrmul must be > 0, got {lrmul!r}.")
        if not float(gain) > 0:
            raise ValueError(f"{name}: gain must be > 0, got {gain!r}.")
        _check_activation(activation, name)
        if clamp is not None and not float(clamp) > 0:
            raise ValueError(f"{name}: clamp must be None or > 0, got {clamp!r}.")
        self.gain = float(gain)
        self.lrmul = float(lrmul)
        self.use_wscale = bool(use_wscale)
        self.use_bias = bool(use_bias)
        self.activation = activation
        self.activation_gain = float(activation_gain)
        self.clamp = None if clamp is None else float(clamp)

    def _make_weights(self, shape, fan_in, bias_units):
        init_std, self.runtime_coef = _equalized_lr(fan_in, self.gain, self.lrmul, self.use_wscale)
        self.kernel = self.add_weight(
            name="kernel", shape=shape, dtype="float32",
            initializer=keras.initializers.RandomNormal(stddev=init_std))
        self.bias = self.add_weight(
            name="bias", shape=(bias_units,), initializer="zeros", dtype="float32") \
            if self.use_bias else None

    def runtime_kernel(self, dtype=tf.float32, scale=1.0):
        """The kernel times its runtime coefficient (he_std * lrmul) and `scale`, scaled in
        float32 (one product), cast."""
        return tf.cast(tf.convert_to_tensor(self.kernel) * (self.runtime_coef * scale), dtype)

    def _apply(self, x, gain, linear):
        """act(linear(x, W) + b) * activation_gain * gain, clamped to +-clamp * gain, with the
        output gain folded into W and b where the activation allows (`fold_gain`).
        `linear(x, kernel)` is the layer's matmul or convolution."""
        scale, gain_left = fold_gain(self.activation, self.activation_gain * gain)
        x = linear(tf.cast(x, self.compute_dtype), self.runtime_kernel(self.compute_dtype, scale))
        bias = None if self.bias is None else tf.convert_to_tensor(self.bias) * (self.lrmul * scale)
        clamp = None if self.clamp is None else self.clamp * gain
        return bias_act(x, bias, self.activation, gain_left, clamp)

    def get_config(self):
        config = super().get_config()
        config.update(gain=self.gain, lrmul=self.lrmul, use_wscale=self.use_wscale,
                      use_bias=self.use_bias, activation=self.activation,
                      activation_gain=self.activation_gain, clamp=self.clamp)
        return config


@keras.saving.register_keras_serializable(package="networks")
class EqualizedDense(_EqualizedBase):
    """Fully connected layer with equalized learning rate (ProGAN `dense` + `apply_bias`).

    y = act((x @ (W * he_std * lrmul)) + b * lrmul) * activation_gain * gain, he_std =
    gain_w / sqrt(fan_in); W ~ N(0, 1/lrmul) with use_wscale (else N(0, he_std/lrmul) and
    runtime coefficient lrmul). StyleGAN v1 puts sqrt(2) into `gain` with activation_gain 1;
    StyleGAN2 uses gain 1 and activation_gain sqrt(2) after the leaky ReLU.

    Args:
      units: output features.
      gain: weight gain in he_std (sqrt(2) for v1 hidden layers, 1 otherwise).
      lrmul: learning-rate multiplier (0.01 in the mapping networks).
      use_wscale: equalized learning rate (runtime scaling); False = He init, no scaling.
      use_bias: add a bias (init 0, used as bias * lrmul).
      activation: "linear", "lrelu" (slope 0.2) or "relu".
      activation_gain: multiplies the activation's output (StyleGAN2: sqrt(2) for lrelu).
      clamp: clip the output to +-clamp (StyleGAN2-ADA `conv_clamp`), None = off.

    Input shape: (N, ..., in) -> output (N, ..., units). A 4-D input is flattened in NHWC
    order first.
    """

    def __init__(self, units, gain=1.0, lrmul=1.0, use_wscale=True, use_bias=True,
                 activation="linear", activation_gain=1.0, clamp=None, **kwargs):
        super().__init__(gain, lrmul, use_wscale, use_bias, activation, activation_gain, clamp,
                         **kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"EqualizedDense: units must be a positive integer, got {units!r}.")
        self.units = int(units)

    def build(self, input_shape):
        fan_in = int(np.prod(input_shape[1:]))
        self._make_weights((fan_in, self.units), fan_in, self.units)

    def call(self, x, gain=1.0):
        if x.shape.rank > 2:
            x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
        return self._apply(x, gain, tf.matmul)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units)
        return config


@keras.saving.register_keras_serializable(package="networks")
class EqualizedConv2D(_EqualizedBase):
    """2-D convolution with equalized learning rate and optional 2x resampling, NHWC.

    Args:
      filters: output channels.
      kernel_size: odd square kernel size ('same' padding).
      up, down: 2x upsampling / downsampling convolution (see `conv2d_resample`).
      resample_kernel: StyleGAN2 FIR kernel, e.g. (1, 3, 3, 1); None = ProGAN / StyleGAN v1.
      fused_scale: v1 fused resampling (transposed / strided conv with the padded kernel).
      gain, lrmul, use_wscale, use_bias, activation, activation_gain, clamp: as EqualizedDense.

    Call: `layer(x, gain=1.0)`; gain multiplies the activation gain and the clamp (StyleGAN2
    resnet blocks pass sqrt(0.5)).

    Input (N, H, W, C) -> output (N, H', W', filters), H' = 2H / H / H/2.
    """

    def __init__(self, filters, kernel_size, up=False, down=False, resample_kernel=None,
                 fused_scale=False, gain=1.0, lrmul=1.0, use_wscale=True, use_bias=True,
                 activation="linear", activation_gain=1.0, clamp=None, **kwargs):
        super().__init__(gain, lrmul, use_wscale, use_bias, activation, activation_gain, clamp,
                         **kwargs)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
            raise ValueError(
                f"EqualizedConv2D: filters must be a positive integer, got {filters!r}.")
        _check_kernel_size(kernel_size, "EqualizedConv2D")
        if up and down:
            raise ValueError("EqualizedConv2D: up and down cannot both be set.")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.up = bool(up)
        self.down = bool(down)
        self.resample_kernel = None if resample_kernel is None else tuple(
            float(v) for v in resample_kernel)
        self.fused_scale = bool(fused_scale)

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        k = self.kernel_size
        self._make_weights((k, k, in_channels, self.filters), k * k * in_channels, self.filters)

    def call(self, x, gain=1.0):
        return self._apply(x, gain, lambda x, kernel: conv2d_resample(
            x, kernel, up=self.up, down=self.down, resample_kernel=self.resample_kernel,
            fused_scale=self.fused_scale))

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        if self.up:
            h, w = h * 2, w * 2
        elif self.down:
            h, w = h // 2, w // 2
        return (n, h, w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, up=self.up,
                      down=self.down, resample_kernel=self.resample_kernel,
                      fused_scale=self.fused_scale)
        return config


@keras.saving.register_keras_serializable(package="networks")
class MinibatchStddev(keras.layers.Layer):
    """Minibatch standard deviation layer (see `minibatch_stddev`).

    Args:
      group_size: G; the batch must be divisible by min(G, N).
      num_features: new feature channels appended (1 in all official configs).

    Input (N, H, W, C) -> output (N, H, W, C + num_features).
    """

    def __init__(self, group_size=4, num_features=1, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or \
                group_size < 1:
            raise ValueError(
                f"MinibatchStddev: group_size must be a positive integer, got {group_size!r}.")
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) or \
                num_features < 1:
            raise ValueError(
                f"MinibatchStddev: num_features must be a positive integer, got {num_features!r}.")
        self.group_size = int(group_size)
        self.num_features = int(num_features)

    def call(self, x):
        return minibatch_stddev(tf.cast(x, self.compute_dtype), self.group_size, self.num_features)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + self.num_features,)

    def get_config(self):
        config = super().get_config()
        config.update(group_size=self.group_size, num_features=self.num_features)
        return config


@keras.saving.register_keras_serializable(package="networks")
class NoiseInput(keras.layers.Layer):
    """Per-pixel noise: x + noise * strength, noise (N, H, W, 1).

    StyleGAN v1: one strength per channel (`per_channel=True`); StyleGAN2: one scalar. Strength
    is trainable, init 0. The constant noise map (H, W) is non-trainable, init N(0, 1).

    Call: `layer(x, noise_mode="random", seed_generator=None)` with noise_mode
      "random": fresh N(0, 1) noise per sample, drawn with `seed_generator` (a
        `keras.random.SeedGenerator` owned by the network; unseeded random ops fail in
        compiled steps); "const": the stored map (deterministic output); "none": x unchanged.
    """

    def __init__(self, per_channel=False, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.per_channel = bool(per_channel)

    def build(self, input_shape):
        _, h, w, c = input_shape
        self.strength = self.add_weight(
            name="strength", shape=(c,) if self.per_channel else (), initializer="zeros",
            dtype="float32")
        self.noise_const = self.add_weight(
            name="noise_const", shape=(h, w), dtype="float32", trainable=False,
            initializer=keras.initializers.RandomNormal(stddev=1.0))

    def call(self, x, noise_mode="random", seed_generator=None, gain=1.0):
        """x + noise * strength * gain (`gain`: a Python number; see fold_gain)."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}.")
        x = tf.cast(x, self.compute_dtype)
        if noise_mode == "none":
            return x
        if noise_mode == "random":
            if seed_generator is None:
                raise ValueError("NoiseInput: noise_mode='random' needs the network's "
                                 "keras.random.SeedGenerator (seed_generator=...).")
            dims = tf.unstack(tf.shape(x)[:3])
            noise = replica_random("normal", dims + [1], seed_generator)
        else:
            noise = tf.convert_to_tensor(self.noise_const)[tf.newaxis, :, :, tf.newaxis]
        strength = tf.convert_to_tensor(self.strength)
        if gain != 1:
            strength = strength * gain
        return x + tf.cast(noise * strength, x.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(per_channel=self.per_channel)
        return config


@keras.saving.register_keras_serializable(package="networks")
class AdaIN(keras.layers.Layer):
    """StyleGAN v1 adaptive instance normalisation: instance_norm(x) * (y_s + 1) + y_b.

    (y_s, y_b) = dense(w) with 2C outputs (gain 1, equalized LR, bias init 0); the first C are
    the scales, the last C the biases. Instance norm (eps 1e-8) and the styles are float32.

    Call: `layer(x, w)` with x (N, H, W, C), w (N, w_dim) -> (N, H, W, C).
    """

    def __init__(self, use_wscale=True, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.use_wscale = bool(use_wscale)
        self.style = None

    def build(self, x_shape, w_shape=None):
        if w_shape is None:
            raise ValueError("AdaIN.build needs (x_shape, w_shape).")
        self.channels = int(x_shape[-1])
        self.style = EqualizedDense(2 * self.channels, gain=1.0, use_wscale=self.use_wscale,
                                    dtype="float32", name="style")
        self.style.build(w_shape)

    def call(self, x, w):
        style = self.style(tf.cast(w, tf.float32))  # [N, 2C]
        scale = style[:, tf.newaxis, tf.newaxis, :self.channels]
        shift = style[:, tf.newaxis, tf.newaxis, self.channels:]
        x32 = instance_norm(tf.cast(x, tf.float32))
        return tf.cast(x32 * (scale + 1.0) + shift, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(use_wscale=self.use_wscale)
        return config


@keras.saving.register_keras_serializable(package="networks")
class ModulatedConv2D(keras.layers.Layer):
    """StyleGAN2 modulated convolution with its affine style layer (no noise, no bias).

    styles = affine(w) + 1 (TF convention: the affine bias is stored around 0 and 1 is added at
    run time; the PyTorch code initialises that bias to 1 instead), float32, (N, I).
    Kernel HWIO (k, k, I, O), init N(0, 1), scaled at run time by 1/sqrt(k*k*I) (equalized LR,
    gain 1). See `modulated_conv2d` for the math and the fused / non-fused paths.

    Args:
      filters: output channels O.
      kernel_size: 3 for convolutions, 1 for ToRGB.
      demodulate: weight demodulation (False for ToRGB).
      up: 2x upsampling convolution (FIR, `resample_kernel`).
      resample_kernel: FIR kernel of the up-convolution.
      fused: per-sample kernels, the official grouped convolution (default: scale the
        activations instead).

    Call: `layer(x, w)` with x (N, H, W, I), w (N, w_dim) -> (N, H', W', O).
    """

    def __init__(self, filters, kernel_size, demodulate=True, up=False,
                 resample_kernel=(1, 3, 3, 1), fused=False, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
            raise ValueError(
                f"ModulatedConv2D: filters must be a positive integer, got {filters!r}.")
        _check_kernel_size(kernel_size, "ModulatedConv2D")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.demodulate = bool(demodulate)
        self.up = bool(up)
        self.resample_kernel = None if resample_kernel is None else tuple(
            float(v) for v in resample_kernel)
        self.fused = bool(fused)
        self.affine = None

    def build(self, x_shape, w_shape=None):
        if w_shape is None:
            raise ValueError("ModulatedConv2D.build needs (x_shape, w_shape).")
        in_channels = int(x_shape[-1])
        k = self.kernel_size
        self.affine = EqualizedDense(in_channels, gain=1.0, dtype="float32", name="affine")
        self.affine.build(w_shape)
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, in_channels, self.filters),
            initializer=keras.initializers.RandomNormal(stddev=1.0), dtype="float32")
        self.weight_gain = 1.0 / math.sqrt(k * k * in_channels)

    def styles(self, w):
        """float32 (N, I): affine(w) + 1."""
        return self.affine(tf.cast(w, tf.float32)) + 1.0

    def call(self, x, w, gain=1.0):
        x = tf.cast(x, self.compute_dtype)
        weight = tf.convert_to_tensor(self.kernel) * self.weight_gain
        return modulated_conv2d(x, weight, self.styles(w), demodulate=self.demodulate, up=self.up,
                                resample_kernel=self.resample_kernel, fused=self.fused, gain=gain)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      demodulate=self.demodulate, up=self.up,
                      resample_kernel=self.resample_kernel, fused=self.fused)
        return config

#----------------------------------------------------------------------------
# Feature quantization in discriminator blocks (shared by ProGAN, StyleGAN, StyleGAN2).


def _per_block(value, block, name):
    if isinstance(value, dict):
        if block not in value:
            raise ValueError(f"{name} has no entry for FQ block {block}: {value!r}.")
        return value[block]
    return value


def make_fq_layers(fq_blocks, valid_blocks, channels_of_block, num_embeddings, decay,
                   commitment_cost, forward="continuous", zero_debias=True):
    """FeatureQuantization layers for the named discriminator blocks.

    Blocks are named by input resolution: block R takes R x R features and outputs R/2 x R/2,
    and its FQ layer quantises that output (official `--discrete_layer`, DESIGN.md).

    Args:
      fq_blocks: iterable of block resolutions (ints, e.g. (16, 32)); empty = no FQ.
      valid_blocks: the resolutions of the network's blocks that may carry FQ.
      channels_of_block: dict block resolution -> channels of its output.
      num_embeddings, decay, commitment_cost, forward, zero_debias: FeatureQuantization
        settings, each a single value or a dict keyed by block resolution.

    Returns:
      (blocks, layers): the block resolutions sorted from high to low (the order in which the
      discriminator runs them) and one built FeatureQuantization layer per block, same order.
    """
    import fq_keras  # local: keeps `networks.layers` importable without the FQ library loaded

    blocks = []
    for b in fq_blocks:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer, str)) or \
                not str(b).isdigit() or int(b) not in valid_blocks:
            raise ValueError(
                f"fq_blocks: {b!r} is not a block of this discriminator; valid blocks (by input "
                f"resolution) are {sorted(valid_blocks, reverse=True)}.")
        blocks.append(int(b))
    if len(set(blocks)) != len(blocks):
        raise ValueError(f"fq_blocks: duplicate blocks in {list(fq_blocks)!r}.")
    blocks = sorted(blocks, reverse=True)
    fq_layers = []
    for b in blocks:
        layer = fq_keras.FeatureQuantization(
            num_embeddings=_per_block(num_embeddings, b, "fq_num_embeddings"),
            decay=_per_block(decay, b, "fq_decay"),
            commitment_cost=_per_block(commitment_cost, b, "fq_commitment_cost"),
            forward=_per_block(forward, b, "fq_forward"),
            zero_debias=_per_block(zero_debias, b, "fq_zero_debias"),
            name=f"fq{b}")
        layer.build((None, b // 2, b // 2, channels_of_block[b]))
        fq_layers.append(layer)
    return tuple(blocks), fq_layers

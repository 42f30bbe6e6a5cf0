"""Forward + backward throughput of the ProGAN / StyleGAN / StyleGAN2 networks.

    python bench/bench_networks.py [--resolutions 32,64] [--batch 8] [--width-divisor 16]
                                   [--families stylegan2,stylegan,progan] [--repeats 5]
                                   [--instances 2]

For each family and resolution it measures, side by side in one run, one training-like step of
G (gradient of mean(G(z)) w.r.t. G's weights) and of D (gradient of mean(D(x)) w.r.t. D's
weights), each as a tf.function without and with XLA (jit_compile=True), and prints images/s
and the XLA speed-up (ratio of the medians). It also prints the cost of an 8x8 progressive stage
against the full-resolution network (StyleGAN v1), of the fused modulated convolution against
the unfused one (StyleGAN2 G), and of D with FQ blocks (16, 32) against D without, in ms and as
the median of the repeats' paired ratios with the errors over the repeats and between copies.
Every comparison builds --instances copies of each function (each with its own network) in a
balanced order and times them interleaved, each repeat after an untimed warm-up call
(bench/timing.time_copies); a figure is the median over the repeats of each repeat's mean over
the copies.

Widths: the official config-e channel formula divided by --width-divisor (default 16:
fmap_base 8192/16 = 512, fmap_max 512/16 = 32; w_dim and z_dim 512/16 = 32), so the numbers
are about the shape of the computation on a CPU, not about full-size training speed.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli_common  # noqa: E402

cli_common.import_tensorflow_quietly()   # TensorFlow's defaults, without its start-up noise

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from networks import layers, progan, stylegan, stylegan2  # noqa: E402
from timing import describe_copies, function_runner, of_copies, time_copies  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("resolutions", ["32", "64"], "Image resolutions to measure.")
flags.DEFINE_list("families", ["stylegan2", "stylegan", "progan"], "Network families.")
flags.DEFINE_integer("batch", 8, "Images per step (a multiple of 4, the mbstd group size).")
flags.DEFINE_integer("width-divisor", 16, "Divide the config-e widths by this.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per function (median reported).")
flags.DEFINE_integer("instances", 2, "Copies of each function, each with its own network, built "
                     "in a balanced order and averaged per repeat (identical copies run a few "
                     "percent apart).")


def build(family, resolution, divisor, fq_blocks=()):
    base, fmax, latent = 8192 // divisor, 512 // divisor, 512 // divisor
    if family == "stylegan2":
        G = stylegan2.Generator(z_dim=latent, w_dim=latent, resolution=resolution,
                                fmap_base=base, fmap_max=fmax)
        D = stylegan2.Discriminator(resolution=resolution, fmap_base=base, fmap_max=fmax,
                                    fq_blocks=fq_blocks)
    elif family == "stylegan":
        G = stylegan.Generator(z_dim=latent, w_dim=latent, mapping_fmaps=latent,
                               resolution=resolution, fmap_base=base, fmap_max=fmax)
        D = stylegan.Discriminator(resolution=resolution, fmap_base=base, fmap_max=fmax,
                                   fq_blocks=fq_blocks)
    else:
        G = progan.Generator(resolution=resolution, latent_size=latent, fmap_base=base,
                             fmap_max=fmax)
        D = progan.Discriminator(resolution=resolution, fmap_base=base, fmap_max=fmax,
                                 fq_blocks=fq_blocks)
    return G, D


def g_step(G, **kwargs):
    def step(z):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(G(z, **kwargs))
        grads = tape.gradient(loss, G.trainable_variables)
        return [g for g in grads if g is not None]  # ToRGBs of unused stages get none
    return step


def d_step(D, return_fq=False):
    def step(x):
        with tf.GradientTape() as tape:
            out = D(x, return_fq=return_fq)
            loss = tf.reduce_mean(out[0] if return_fq else out)
            if return_fq:
                loss += sum(lk["loss"] for lk in out[1])
        grads = tape.gradient(loss, D.trainable_variables)
        return [g for g in grads if g is not None]  # FromRGBs of unused stages get none
    return step


def time_functions(builders):
    """bench/timing.time_copies of {name: build}, build() -> (function, argument), with
    --instances copies and --repeats: (times, {name: median seconds of the pooled repeats})."""
    times, pooled = time_copies({name: (lambda build=build: function_runner(*build()))
                                 for name, build in builders.items()},
                                FLAGS.instances, FLAGS.repeats)
    return times, {name: float(np.median(t)) for name, t in pooled.items()}


def describe(label, times, numerator, denominator):
    """`  <label> <ratio>x (median of n paired repeats, ...)` of two functions of
    `time_functions`."""
    return "  " + describe_copies(label, times, numerator, denominator, FLAGS.instances)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.batch % 4:
        raise app.UsageError("--batch must be a multiple of 4 (minibatch stddev group size).")
    unknown = set(FLAGS.families) - {"stylegan2", "stylegan", "progan"}
    if unknown:
        raise app.UsageError(f"Unknown --families {sorted(unknown)}.")
    n, div = FLAGS.batch, FLAGS['width-divisor'].value
    z = tf.random.normal((n, 512 // div))   # every family's z_dim: 512 / --width-divisor
    print(f"batch {n}, config-e widths / {div}, {FLAGS.repeats} repeats (median), "
          f"{of_copies(FLAGS.instances)}, {os.cpu_count()} CPUs")
    rows = []
    for family in FLAGS.families:
        for res in (int(r) for r in FLAGS.resolutions):
            print(f"{family} {res}x{res}:", flush=True)
            x = tf.random.uniform((n, res, res, 3), -1, 1)
            fns = {}
            for jit in (False, True):
                suffix = " XLA" if jit else ""
                fns["G" + suffix] = lambda f=family, r=res, jit=jit: (
                    tf.function(g_step(build(f, r, div)[0]), jit_compile=jit), z)
                fns["D" + suffix] = lambda f=family, r=res, jit=jit: (
                    tf.function(d_step(build(f, r, div)[1]), jit_compile=jit), x)
            rows.append((family, res, time_functions(fns)[1]))
    print(f"{'network':<24}{'res':>5}{'img/s':>10}{'img/s XLA':>11}{'XLA x':>8}")
    for family, res, t in rows:
        for net in ("G", "D"):
            plain, xla = t[net], t[net + " XLA"]
            print(f"{family + ' ' + net:<24}{res:>5}{n / plain:>10.1f}{n / xla:>11.1f}"
                  f"{plain / xla:>8.2f}")

    res = max(int(r) for r in FLAGS.resolutions)
    lod = tf.constant(float(np.log2(res) - 3))
    times, t = time_functions({
        "8x8 stage": lambda: (tf.function(g_step(build("stylegan", res, div)[0], lod=lod,
                                              resolution=8)), z),
        "full": lambda: (tf.function(g_step(build("stylegan", res, div)[0])), z)})
    print(f"stylegan G fwd+bwd, 8x8 stage vs full {res}x{res}: {t['8x8 stage'] * 1e3:.1f} ms vs "
          f"{t['full'] * 1e3:.1f} ms")
    print(describe("full / 8x8 stage time:", times, "full", "8x8 stage"))

    # The fused modulated conv (official converted weights): per-sample kernels as grouped
    # convolutions where this TensorFlow has them (oneDNN on), else im2col matrix products.
    def stylegan2_g(**kwargs):
        return stylegan2.Generator(z_dim=512 // div, w_dim=512 // div, resolution=res,
                                   fmap_base=8192 // div, fmap_max=512 // div, **kwargs)

    times, t = time_functions({
        "fused": lambda: (tf.function(g_step(stylegan2_g(fused_modconv=True))), z),
        "unfused": lambda: (tf.function(g_step(stylegan2_g())), z)})
    path = "grouped convs" if layers.grouped_convs_supported() else "im2col"
    print(f"stylegan2 G fwd+bwd at {res}x{res}, fused modconv ({path}) vs unfused: "
          f"{t['fused'] * 1e3:.1f} ms vs {t['unfused'] * 1e3:.1f} ms")
    print(describe("fused / unfused time:", times, "fused", "unfused"))

    if res >= 32:
        x = tf.random.uniform((n, res, res, 3), -1, 1)

        def fq_d():
            return build("stylegan2", res, div, fq_blocks=(16, 32))[1]

        times, t = time_functions({
            "FQ on": lambda: (tf.function(d_step(fq_d(), return_fq=True)), x),
            "FQ off": lambda: (tf.function(d_step(build("stylegan2", res, div)[1])), x)})
        print(f"stylegan2 D fwd+bwd at {res}x{res}, FQ blocks (16, 32) vs none: "
              f"{t['FQ on'] * 1e3:.1f} ms vs {t['FQ off'] * 1e3:.1f} ms")
        print(describe("FQ on / off time:", times, "FQ on", "FQ off"))


if __name__ == "__main__":
    app.run(main)

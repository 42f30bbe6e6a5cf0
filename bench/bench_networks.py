"""Forward + backward throughput of the ProGAN / StyleGAN / StyleGAN2 networks.

    python bench/bench_networks.py [--resolutions 32,64] [--batch 8] [--width-divisor 16]
                                   [--families stylegan2,stylegan,progan] [--repeats 5]

For each family and resolution it measures, side by side in one run (interleaved repeats,
median reported), one training-like step of G (gradient of mean(G(z)) w.r.t. G's weights) and
of D (gradient of mean(D(x)) w.r.t. D's weights), each as a tf.function without and with XLA
(jit_compile=True), and prints images/s and the XLA speed-up. It also prints the cost of an
8x8 progressive stage against the full-resolution network (StyleGAN v1), and D with FQ blocks
(16, 32) against D without.

Widths: the official config-e channel formula divided by --width-divisor (default 16:
fmap_base 8192/16 = 512, fmap_max 512/16 = 32; w_dim and z_dim 512/16 = 32), so the numbers
are about the shape of the computation on a CPU, not about full-size training speed.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from networks import layers, progan, stylegan, stylegan2  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("resolutions", ["32", "64"], "Image resolutions to measure.")
flags.DEFINE_list("families", ["stylegan2", "stylegan", "progan"], "Network families.")
flags.DEFINE_integer("batch", 8, "Images per step (a multiple of 4, the mbstd group size).")
flags.DEFINE_integer("width-divisor", 16, "Divide the config-e widths by this.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per function (median reported).")


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


def median_seconds(functions, repeats):
    """{name: (fn, arg)} -> {name: median seconds}, repeats interleaved across functions."""
    times = {name: [] for name in functions}
    for fn, arg in functions.values():
        for _ in range(2):  # trace / compile, warm up
            tf.nest.map_structure(lambda t: t.numpy(), fn(arg))
    for _ in range(repeats):
        for name, (fn, arg) in functions.items():
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), fn(arg))
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.batch % 4:
        raise app.UsageError("--batch must be a multiple of 4 (minibatch stddev group size).")
    unknown = set(FLAGS.families) - {"stylegan2", "stylegan", "progan"}
    if unknown:
        raise app.UsageError(f"Unknown --families {sorted(unknown)}.")
    n, div = FLAGS.batch, FLAGS['width-divisor'].value
    print(f"batch {n}, config-e widths / {div}, {FLAGS.repeats} repeats (median), "
          f"{os.cpu_count()} CPUs")
    print(f"{'network':<24}{'res':>5}{'img/s':>10}{'img/s XLA':>11}{'XLA x':>8}")
    for family in FLAGS.families:
        for res in (int(r) for r in FLAGS.resolutions):
            G, D = build(family, res, div)
            z = tf.random.normal((n, G.z_dim))
            x = tf.random.uniform((n, res, res, 3), -1, 1)
            fns = {}
            for jit in (False, True):
                fns[("G", jit)] = (tf.function(g_step(G), jit_compile=jit), z)
                fns[("D", jit)] = (tf.function(d_step(D), jit_compile=jit), x)
            t = median_seconds(fns, FLAGS.repeats)
            for net in ("G", "D"):
                plain, xla = t[(net, False)], t[(net, True)]
                print(f"{family + ' ' + net:<24}{res:>5}{n / plain:>10.1f}{n / xla:>11.1f}"
                      f"{plain / xla:>8.2f}")

    res = max(int(r) for r in FLAGS.resolutions)
    G, D = build("stylegan", res, div)
    z = tf.random.normal((n, G.z_dim))
    lod = tf.constant(float(np.log2(res) - 3))
    t = median_seconds({"stage8": (tf.function(g_step(G, lod=lod, resolution=8)), z),
                        "full": (tf.function(g_step(G)), z)}, FLAGS.repeats)
    print(f"stylegan G fwd+bwd, 8x8 stage vs full {res}x{res}: {t['stage8'] * 1e3:.1f} ms vs "
          f"{t['full'] * 1e3:.1f} ms (x{t['full'] / t['stage8']:.1f})")

    # The fused modulated conv (official converted weights): per-sample kernels as grouped
    # convolutions where this TensorFlow has them (oneDNN on), else im2col matrix products.
    G_fused = stylegan2.Generator(z_dim=G.z_dim, w_dim=G.z_dim, resolution=res,
                                  fmap_base=8192 // div, fmap_max=512 // div, fused_modconv=True)
    G_plain = stylegan2.Generator(z_dim=G.z_dim, w_dim=G.z_dim, resolution=res,
                                  fmap_base=8192 // div, fmap_max=512 // div)
    t = median_seconds({"fused": (tf.function(g_step(G_fused)), z),
                        "plain": (tf.function(g_step(G_plain)), z)}, FLAGS.repeats)
    path = "grouped convs" if layers.grouped_convs_supported() else "im2col"
    print(f"stylegan2 G fwd+bwd at {res}x{res}, fused modconv ({path}) vs unfused: "
          f"{t['fused'] * 1e3:.1f} ms vs {t['plain'] * 1e3:.1f} ms "
          f"(x{t['fused'] / t['plain']:.2f})")

    if res >= 32:
        _, D_fq = build("stylegan2", res, div, fq_blocks=(16, 32))
        _, D_base = build("stylegan2", res, div)
        x = tf.random.uniform((n, res, res, 3), -1, 1)
        t = median_seconds({"fq": (tf.function(d_step(D_fq, return_fq=True)), x),
                            "base": (tf.function(d_step(D_base)), x)}, FLAGS.repeats)
        print(f"stylegan2 D fwd+bwd at {res}x{res}, FQ blocks (16, 32) vs none: "
              f"{t['fq'] * 1e3:.1f} ms vs {t['base'] * 1e3:.1f} ms "
              f"(+{100 * (t['fq'] / t['base'] - 1):.1f}%)")


if __name__ == "__main__":
    app.run(main)

"""Forward + backward cost of the U-GAT-IT and BigGAN networks with FQ on and off.

    python bench/bench_ugatit_biggan_networks.py [--ugatit-sizes 64,128] [--biggan-batch 16]

One timed "iteration" per model mirrors a training iteration without the optimiser update:
- U-GAT-IT (light, one translation direction): G_A2B forward; D step = global and local D on
  real B and the fake (LSGAN + FQ losses) and their gradients, then the dictionary EMA update;
  G step = G_A2B forward, both D on the fake and the gradients of G.
- BigGAN (CIFAR-10 configuration): D step = G forward (no gradient), D on concat([fake, real])
  (hinge + FQ losses) and its gradients, the dictionary update; G step = G and D forward and the
  gradients of G.
Below 96x96 the official global discriminator (n_layers=7) cannot run (its reflection padding
needs >= 2 pixels), so at 64x64 the global D has the largest n_layers that fits (6).
FQ on = the official presets (U-GAT-IT: global D, convs 1,2,3, K 64/128/128; BigGAN: D blocks
0-3, K 1024); off = the same networks without FQ. Both variants are compiled tf.functions,
timed interleaved in one run, and printed side by side as iterations/s from the median and from
the fastest repeat (the latter is less sensitive to other processes on a shared machine). The paper
reports +1.2% to +3.1% training time for FQ-BigGAN on GPUs.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import fq_keras  # noqa: E402
from networks import biggan, ugatit  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("ugatit-sizes", ["64", "128"], "U-GAT-IT image sizes (light mode).")
flags.DEFINE_integer("ugatit-batch", 1, "U-GAT-IT batch size (official: 1).")
flags.DEFINE_integer("ugatit-width", 64, "U-GAT-IT ngf = ndf (official: 64).")
flags.DEFINE_integer("biggan-batch", 16, "BigGAN batch size (official: 64).")
flags.DEFINE_integer("biggan-ch", 64, "BigGAN channel multiplier (official CIFAR: 64).")
flags.DEFINE_integer("repeats", 5, "Timed repeats per variant (median reported).")
flags.DEFINE_boolean("xla", False, "Compile the steps with XLA (jit_compile=True).")


def global_layers(size):
    return min(7, ugatit.max_discriminator_layers(size))


def ugatit_step(size, fq):
    nets = ugatit.make_ugatit(light=True, img_size=size, ngf=FLAGS['ugatit-width'].value,
                              ndf=FLAGS['ugatit-width'].value, fq="official" if fq else None,
                              global_layers=global_layers(size))
    G, DG, DL = nets["genA2B"], nets["disGA"], nets["disLA"]
    shape = (FLAGS['ugatit-batch'].value, size, size, 3)
    G.build(shape)
    DG.build(shape)
    DL.build(shape)

    def mse(x, target):
        return tf.reduce_mean(tf.square(x - target))

    @tf.function(jit_compile=FLAGS.xla)
    def step(real_a, real_b):
        fake = tf.stop_gradient(G(real_a)[0])
        with tf.GradientTape() as tape:
            (g_real, g_cam_real, _), real_fq = DG(real_b, training=True, return_fq=True)
            (g_fake, g_cam_fake, _), fake_fq = DG(fake, training=True, return_fq=True)
            l_real, l_cam_real, _ = DL(real_b, training=True)
            l_fake, l_cam_fake, _ = DL(fake, training=True)
            d_loss = (mse(g_real, 1) + mse(g_fake, 0) + mse(g_cam_real, 1) + mse(g_cam_fake, 0)
                      + mse(l_real, 1) + mse(l_fake, 0) + mse(l_cam_real, 1) + mse(l_cam_fake, 0)
                      + fq_keras.fq_loss(real_fq) + fq_keras.fq_loss(fake_fq))
        d_vars = DG.trainable_variables + DL.trainable_variables
        d_grads = tape.gradient(d_loss, d_vars)
        fq_keras.update_dictionaries(DG.fq_layers, real_fq, fake_fq)
        with tf.GradientTape() as tape:
            fake = G(real_a)[0]
            (g_fake, g_cam_fake, _), fake_fq = DG(fake, training=True, return_fq=True)
            l_fake, l_cam_fake, _ = DL(fake, training=True)
            g_loss = (mse(g_fake, 1) + mse(g_cam_fake, 1) + mse(l_fake, 1) + mse(l_cam_fake, 1)
                      + fq_keras.fq_loss(fake_fq))
        g_grads = tape.gradient(g_loss, G.trainable_variables)
        return d_loss + g_loss + tf.add_n([tf.reduce_sum(g) for g in d_grads + g_grads])

    rng = np.random.RandomState(0)
    args = tuple(tf.constant(rng.uniform(-1, 1, shape).astype(np.float32)) for _ in range(2))
    return step, args


def biggan_step(fq):
    G, D = biggan.make_biggan("cifar10", fq=fq, ch=FLAGS['biggan-ch'].value)
    G.build()
    D.build()
    batch = FLAGS['biggan-batch'].value

    @tf.function(jit_compile=FLAGS.xla)
    def step(z, labels, reals):
        fakes = tf.stop_gradient(G(z, labels, training=True))
        with tf.GradientTape() as tape:
            logits, lookups = D(tf.concat([fakes, reals], 0), tf.concat([labels, labels], 0),
                                training=True, return_fq=True)
            fake_logits, real_logits = tf.split(logits, 2)
            d_loss = (tf.reduce_mean(tf.nn.relu(1 - real_logits))
                      + tf.reduce_mean(tf.nn.relu(1 + fake_logits)) + fq_keras.fq_loss(lookups))
        d_grads = tape.gradient(d_loss, D.trainable_variables)
        fq_keras.update_dictionaries(D.fq_layers, lookups)
        with tf.GradientTape() as tape:
            logits, lookups = D(G(z, labels, training=True), labels, training=True, return_fq=True)
            g_loss = -tf.reduce_mean(logits) + fq_keras.fq_loss(lookups)
        g_grads = tape.gradient(g_loss, G.trainable_variables)
        return d_loss + g_loss + tf.add_n([tf.reduce_sum(g) for g in d_grads + g_grads])

    rng = np.random.RandomState(0)
    args = (tf.constant(rng.randn(batch, G.dim_z).astype(np.float32)),
            tf.constant(rng.randint(0, 10, batch).astype(np.int32)),
            tf.constant(rng.uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32)))
    return step, args


def median_seconds(variants, repeats):
    """Interleaved timing so both variants see the same machine load."""
    for fn, args in variants.values():
        fn(*args).numpy()  # trace
        fn(*args).numpy()  # warm up
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (fn, args) in variants.items():
            start = time.perf_counter()
            fn(*args).numpy()
            times[name].append(time.perf_counter() - start)
    return {name: (float(np.median(t)), float(np.min(t))) for name, t in times.items()}


def report(label, seconds):
    (off, off_best), (on, on_best) = seconds["off"], seconds["on"]
    print(f"{label:<36} {1 / off:8.3f} {1 / on:8.3f} {100 * (on / off - 1):+7.1f}%   "
          f"{1 / off_best:8.3f} {1 / on_best:8.3f} {100 * (on_best / off_best - 1):+7.1f}%",
          flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    sizes = [int(s) for s in FLAGS['ugatit-sizes'].value]
    if any(s < ugatit.min_discriminator_size(5) or s % 4 for s in sizes):
        raise app.UsageError(f"--ugatit-sizes must be divisible by 4 and >= "
                             f"{ugatit.min_discriminator_size(5)} (the local discriminator).")
    print(f"Forward + backward iterations/s over {FLAGS.repeats} repeats, XLA = {FLAGS.xla}, "
          f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s), "
          f"{len(tf.config.list_physical_devices('GPU'))} GPU(s)")
    print(f"{'':<36} {'median':-^26}   {'best':-^26}")
    print(f"{'model':<36} {'FQ off':>8} {'FQ on':>8} {'FQ cost':>8}   "
          f"{'FQ off':>8} {'FQ on':>8} {'FQ cost':>8}")
    for size in sizes:
        variants = {"off": ugatit_step(size, False), "on": ugatit_step(size, True)}
        report(f"U-GAT-IT light {size}x{size} b{FLAGS['ugatit-batch'].value} w{FLAGS['ugatit-width'].value} "
               f"gD{global_layers(size)}",
               median_seconds(variants, FLAGS.repeats))
    variants = {"off": biggan_step(False), "on": biggan_step(True)}
    report(f"BigGAN CIFAR-10 batch {FLAGS['biggan-batch'].value} ch{FLAGS['biggan-ch'].value}",
           median_seconds(variants, FLAGS.repeats))


if __name__ == "__main__":
    app.run(main)

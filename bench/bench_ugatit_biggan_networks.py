"""Forward + backward cost of the U-GAT-IT and BigGAN networks with FQ on and off.

    python bench/bench_ugatit_biggan_networks.py [--ugatit-sizes 64,128] [--biggan-batch 16]
                                                 [--repeats 5] [--instances 1]

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
--instances copies of each built in a balanced order, timed interleaved in one run (each repeat
after an untimed warm-up call; bench/timing.time_copies), and printed side by side as
iterations/s from the median and from the fastest repeat (each repeat's mean over the copies;
the fastest is less sensitive to other processes on a shared machine), then FQ's cost as the
median of the repeats' paired on / off ratios, with the errors over the repeats and between
copies. The paper reports +1.2% to +3.1% training time for FQ-BigGAN on GPUs.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli_common  # noqa: E402

cli_common.import_tensorflow_quietly()   # TensorFlow's defaults, without its start-up noise

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import fq_keras  # noqa: E402
from networks import biggan, ugatit  # noqa: E402
from timing import describe_copies, function_runner, of_copies, time_copies  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("ugatit-sizes", ["64", "128"], "U-GAT-IT image sizes (light mode).")
flags.DEFINE_integer("ugatit-batch", 1, "U-GAT-IT batch size (official: 1).")
flags.DEFINE_integer("ugatit-width", 64, "U-GAT-IT ngf = ndf (official: 64).")
flags.DEFINE_integer("biggan-batch", 16, "BigGAN batch size (official: 64).")
flags.DEFINE_integer("biggan-ch", 64, "BigGAN channel multiplier (official CIFAR: 64).")
flags.DEFINE_integer("repeats", 5, "Timed repeats per variant (median reported).")
flags.DEFINE_integer("instances", 1, "Copies of FQ off and FQ on, built in a balanced order and "
                     "averaged per repeat (identical copies run a few percent apart). Default 1: "
                     "the default sizes' steps take seconds, and 2 copies would run the script "
                     "about 2.5x as long as 1 (estimated, not measured).")
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


def time_variants(label, make_step):
    """bench/timing.time_copies of FQ off and on, --instances copies each, under a heading
    `label`; make_step(fq) -> (step, args) as ugatit_step / biggan_step. Returns (label,
    (times, pooled))."""
    print(f"{label}:", flush=True)

    def builder(fq):
        def build():
            step, args = make_step(fq)
            return function_runner(step, *args)   # reading the returned scalar waits for it
        return build
    return label, time_copies({"FQ off": builder(False), "FQ on": builder(True)},
                              FLAGS.instances, FLAGS.repeats)


def report(rows):
    """A table of iterations/s, FQ off and on, from the median and the fastest repeat; then FQ's
    cost per model as the paired on / off ratio of iteration times. rows: [(label, (times,
    pooled)) of time_variants]."""
    print(f"{'':<36} {'median':-^17}   {'best':-^17}   ({of_copies(FLAGS.instances)})")
    print(f"{'model':<36} {'FQ off':>8} {'FQ on':>8}   {'FQ off':>8} {'FQ on':>8}")
    for label, (_, pooled) in rows:
        off, on = pooled["FQ off"], pooled["FQ on"]
        print(f"{label:<36} {1 / np.median(off):8.3f} {1 / np.median(on):8.3f}   "
              f"{1 / np.min(off):8.3f} {1 / np.min(on):8.3f}")
    for label, (times, _) in rows:
        print(describe_copies(f"{label}, FQ cost (on / off iteration time):", times, "FQ on",
                              "FQ off", FLAGS.instances))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    sizes = [int(s) for s in FLAGS['ugatit-sizes'].value]
    if any(s < ugatit.min_discriminator_size(5) or s % 4 for s in sizes):
        raise app.UsageError(f"--ugatit-sizes must be divisible by 4 and >= "
                             f"{ugatit.min_discriminator_size(5)} (the local discriminator).")
    print(f"Forward + backward iterations/s over {FLAGS.repeats} repeats, XLA = {FLAGS.xla}, "
          f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s), "
          f"{len(tf.config.list_physical_devices('GPU'))} GPU(s)", flush=True)
    rows = [time_variants(f"U-GAT-IT light {size}x{size} b{FLAGS['ugatit-batch'].value} "
                          f"w{FLAGS['ugatit-width'].value} gD{global_layers(size)}",
                          lambda fq: ugatit_step(size, fq)) for size in sizes]
    rows.append(time_variants(f"BigGAN CIFAR-10 batch {FLAGS['biggan-batch'].value} "
                              f"ch{FLAGS['biggan-ch'].value}", biggan_step))
    report(rows)


if __name__ == "__main__":
    app.run(main)

"""Export of BigGAN / FQ-BigGAN generators (`networks.biggan.BigGANGenerator`).

Signatures (N is dynamic; C = num_classes, metadata "c_dim"; Z = G.dim_z, metadata "z_dim"):

    serving_default(z float32 [N, Z], truncation_psi float32 [], labels float32 [N, C])
        labels: one-hot rows (`tf.one_hot(class_ids, C)`), as the StyleGAN family's
        conditional exports take them; anything else (soft labels, two ones, an empty row)
        fails with InvalidArgumentError instead of being silently argmax'd.
    classes(z float32 [N, Z], truncation_psi float32 [], class_ids int32 [N])
        integer class indices in [0, C); out-of-range ids fail with InvalidArgumentError (a
        plain gather would fail on CPU but return zeros on GPU).
        -> images uint8 [N, R, R, 3], images_float float32 [N, R, R, 3] (clipped to [-1, 1])

Both compute the same function: serving_default(z, psi, one_hot(ids)) == classes(z, psi, ids)
exactly (labels are turned into ids by argmax, then one path). With plain TensorFlow:

    G = tf.saved_model.load("runs/00001-biggan-shapes/export")
    images = G.signatures["classes"](z=tf.random.normal([4, 128]), truncation_psi=tf.constant(1.0),
                                     class_ids=tf.constant([0, 1, 2, 3]))["images"]

Metadata (besides format, family, class): z_dim, c_dim = num_classes, resolution, shared_dim,
hier, ch, sample_mode "eval", truncation_kind "z_scale"; from runs also source, iterations, kimg,
config.

Mode: the generator runs in eval mode, `G(z, ids, training=False)`: batch norms use stored
statistics and spectral norms their stored u (one power iteration, not stored). So the
SavedModel is deterministic, holds no state it could change, and every image depends on its
own z and class only (batch 1 and batch 7 give the same image up to float rounding). This is
BigGAN-PyTorch's `--G_eval_mode`, how the ImageNet preset samples; the CIFAR presets draw their
training grids and metrics in train mode (batch statistics of the sampled batch, a function of
the whole batch), so export images of a CIFAR-preset run are not pixel copies of its fakes*.png.

Standing statistics (default on): the stored batch-norm statistics of the export are those of
the exported generator itself, as BigGAN-PyTorch's sample.py with `--G_eval_mode --mybn
--accumulate_stats` (`utils.accumulate_standing_stats`): `standing_accumulations` (16) train-mode
forwards of `standing_batch` (64) draws, z ~ N(0, I) and classes uniform (numpy
RandomState(`standing_seed`), so every export of the same weights is identical), and every
batch norm stores the average of the batches' means and (biased) variances, as myBN. The running statistics
that training leaves behind are exponential averages over G's earlier weights (and G_ema
averages G's), which lag the weights: on the demo preset after 150 iterations, samples in eval
mode with them match their requested class 37% of the time, with standing statistics 62.5%,
as in train mode (62%). Only the statistics change: the spectral-norm vectors those forwards
update are put back.
`standing_accumulations=0` keeps the training's running statistics.

truncation_psi: z <- psi * z before the generator. BigGAN-PyTorch's sampling script draws
z ~ N(0, sigma^2) with `--z_var` / `--sample_trunc_curves` setting sigma, the curves it reports
as "truncation"; for z ~ N(0, I) that is psi * z with psi = sigma, the z-space counterpart of
StyleGAN's w_avg + psi (w - w_avg) (the mean of z is 0). psi = 1 returns z itself; psi = 0 gives
one image per class for every z. The paper's truncation trick proper (z from a truncated
normal: values with |z| > threshold resampled) is a choice of z, made by the caller before
calling the SavedModel, which takes any z.

`copy` is `export.core.float32_copy`, after building an unbuilt source network (converted weights
restored before building), which completes its checkpoint restoration.
"""

import numpy as np
import tensorflow as tf

from export.core import Exporter, ExportError, float32_copy, image_outputs, rebuild_run
from training import biggan as biggan_family

# BigGAN-PyTorch's defaults: --num_standing_accumulations 16 forwards of G_batch_size (the CIFAR
# scripts' batch, 64).
STANDING_ACCUMULATIONS = 16
STANDING_BATCH = 64


class BigGANExporter(Exporter):
    """BigGAN generators (`networks.biggan.BigGANGenerator`), e.g. a BigGAN run's G_ema."""

    def copy(self, network):
        """The generator rebuilt in float32, built, with every variable copied in order."""
        if not network.built:
            # BigGAN networks create their weights in build(). Networks rebuilt from a config
            # and then restored from a tf.train.Checkpoint (networks.convert.load_networks,
            # i.e. run_convert.py output) are unbuilt; building them now creates the weights
            # and TensorFlow's deferred restoration fills them with the checkpoint's values.
            network.build()
        return float32_copy(network)

    def build(self, network, standing_accumulations=STANDING_ACCUMULATIONS,
              standing_batch=STANDING_BATCH, standing_seed=0, **settings):
        """Signature functions of a BigGAN generator (float32 export copy).

        Args:
          network: the generator (float32 export copy; its batch-norm statistics are replaced).
          standing_accumulations: train-mode forwards averaged into the stored batch-norm
            statistics (module docstring); 0 = keep the running statistics of training.
          standing_batch: images per forward.
          standing_seed: seed of their z and classes.
          **settings: none other exist (no noise inputs, no stages; truncation is an input);
            any given (e.g. run_export.py --noise-mode) is an ExportError.
        """
        if settings:
            raise ExportError(f"BigGAN exports take no {', '.join(sorted(settings))} (noise mode "
                              "and truncation cutoff are StyleGAN settings); BigGAN's are "
                              "standing_accumulations, standing_batch, standing_seed.")
        for name, value, minimum in (("standing_accumulations", standing_accumulations, 0),
                                     ("standing_batch", standing_batch, 1),
                                     ("standing_seed", standing_seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ExportError(f"{name} must be an integer >= {minimum}, got {value!r}.")
        G = network
        if standing_accumulations:
            accumulate_standing_statistics(G, standing_accumulations, standing_batch,
                                           standing_seed)
        z_dim, num_classes = int(G.dim_z), int(G.num_classes)
        z_spec = tf.TensorSpec([None, z_dim], tf.float32, name="z")
        psi_spec = tf.TensorSpec([], tf.float32, name="truncation_psi")
        labels_spec = tf.TensorSpec([None, num_classes], tf.float32, name="labels")
        ids_spec = tf.TensorSpec([None], tf.int32, name="class_ids")

        def generate(z, truncation_psi, class_ids):
            checks = [
                tf.debugging.assert_equal(
                    tf.shape(z)[0], tf.shape(class_ids)[0],
                    message="z and the labels / class_ids must have the same batch size"),
                tf.debugging.assert_equal(
                    tf.reduce_all((class_ids >= 0) & (class_ids < num_classes)), True,
                    message=f"class ids must be in [0, {num_classes})")]
            with tf.control_dependencies(checks):
                # psi = 1 keeps z bit for bit (1 * x == x in IEEE arithmetic).
                return image_outputs(G(truncation_psi * z, class_ids, training=False))

        @tf.function(input_signature=[z_spec, psi_spec, labels_spec], autograph=False)
        def serving_default(z, truncation_psi, labels):
            one_hot = tf.reduce_all(tf.equal(labels, 0.0) | tf.equal(labels, 1.0)) & \
                tf.reduce_all(tf.equal(tf.reduce_sum(labels, axis=1), 1.0))
            check = tf.debugging.assert_equal(
                one_hot, True, message=f"labels must be one-hot rows of {num_classes} values "
                "(one 1, zeros elsewhere); for integer class ids use the classes signature")
            with tf.control_dependencies([check]):
                class_ids = tf.argmax(labels, axis=1, output_type=tf.int32)
            return generate(z, truncation_psi, class_ids)

        @tf.function(input_signature=[z_spec, psi_spec, ids_spec], autograph=False)
        def classes(z, truncation_psi, class_ids):
            return generate(z, truncation_psi, class_ids)

        metadata = dict(
            z_dim=z_dim, c_dim=num_classes, num_classes=num_classes,
            resolution=int(G.resolution), network_resolution=int(G.resolution), lod=None,
            img_channels=3, truncation=True, truncation_kind="z_scale", sample_mode="eval",
            shared_dim=int(G.shared_dim), hier=bool(G.hier), ch=int(G.ch),
            standing_statistics=dict(accumulations=standing_accumulations,
                                     batch=standing_batch, seed=standing_seed)
            if standing_accumulations else None)
        return {"serving_default": serving_default, "classes": classes}, metadata, {}

    def load_run(self, run_dir, checkpoint=None):
        """G_ema of a BigGAN run (latest checkpoint by default)."""
        checkpoint, options, networks, counts = rebuild_run(
            run_dir, checkpoint, lambda *run: biggan_family.load_networks(*run, ("Gs",)),
            ("iteration",))
        iterations = counts["iteration"]
        metadata = {"source": f"{run_dir} ({checkpoint})", "iterations": iterations,
                    "kimg": iterations * options.images_per_iteration / 1000.0,
                    "config": options.config}
        return networks["Gs"], {}, metadata


def accumulate_standing_statistics(G, accumulations, batch, seed):
    """Stores in every batch norm of G the average of its batch statistics over `accumulations`
    train-mode forwards of `batch` draws (z ~ N(0, I), uniform classes, RandomState(seed)):
    the batch means and biased variances, as BigGAN-PyTorch's myBN standing statistics. Every
    other variable keeps its value. Eager, on an export copy (changes G's statistics)."""
    # Each batch norm with the side of the maps it normalises: GBlock i takes 4 * 2^i maps
    # (bn1) and normalises its upsampled 8 * 2^i maps (bn2); output_bn the final images'.
    norms, sides = [G.output_bn], [G.bottom_width * 2 ** len(G.blocks)]
    for index, block in enumerate(G.blocks):
        norms += [block.bn1, block.bn2]
        sides += [G.bottom_width * 2 ** index, G.bottom_width * 2 ** (index + 1)]
    statistics = {id(v) for bn in norms for v in (bn.stored_mean, bn.stored_var)}
    kept = [(v, tf.identity(v)) for v in G.non_trainable_variables if id(v) not in statistics]
    momenta = [bn.momentum for bn in norms]
    rng = np.random.RandomState(seed)
    try:
        for k in range(1, accumulations + 1):
            # stored <- (1 - 1/k) stored + (1/k) batch: after k forwards, the mean of k batches.
            for bn in norms:
                bn.momentum = 1.0 / k
            z = rng.randn(batch, G.dim_z).astype(np.float32)
            labels = rng.randint(G.num_classes, size=batch).astype(np.int32)
            G(z, labels, training=True)
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
    for bn, side in zip(norms, sides):
        # The layers' update averages unbiased variances (x n / (n - 1)); myBN the biased ones.
        count = batch * side * side
        bn.stored_var.assign(bn.stored_var * ((count - 1) / count) if count > 1 else
                             bn.stored_var)
    for variable, value in kept:  # the spectral-norm u (and sv) these forwards updated
        variable.assign(value)


EXPORTER = BigGANExporter()

"""The U-GAT-IT trainer (FQ-U-GAT-IT): both translation directions, four discriminators.

One training iteration is the official UGATIT-pytorch `train()` body, in its order:

    D step  fakes A->B, B->A (no gradient); D_GA, D_LA on (real A, fake B->A), D_GB, D_LB on
            (real B, fake A->B), LSGAN on outputs and CAM logits, + alpha * FQ(real + fake) of
            the global Ds; one Adam step on all four Ds; then ONE EMA update of every FQ
            dictionary from that step's real + fake features (FQ update cadence "step"; at
            "official" one from the reals, then one from the fakes: fq_keras.gan).
    G step  A->B, B->A (the D step's translations: the official code recomputes them with the
            same weights; here they are computed once, under the G tape), the cycles A->B->A
            and B->A->B, the identities A->A (G_B->A on A) and B->B; LSGAN(fake, 1) on the 4 outputs and 4 CAM logits, cycle L1 x 10, identity
            L1 x 10, CAM BCE x 1000, + alpha * FQ(fake) of the global Ds; one Adam step on
            both generators; then rho clipped to [0, 1]; at the "official" FQ update cadence an
            EMA update of every FQ dictionary from those fakes.

The paper's FQ warm-up (`fq_warmup_iterations`): alpha ramps from 0 and FQ layers built with
forward="quantized" feed h forward until it ends, both set in-graph from the iteration counter.

Every term is an element mean (MSELoss / L1Loss / BCEWithLogitsLoss). Each is computed here as
a per-sample mean summed over the replica's batch and divided by the GLOBAL batch, so the
gradients Keras sums over replicas equal one device with the global batch. All other state stays
identical on every replica: spectral-norm vectors (deterministic power iteration), FQ
dictionaries (all-reduced statistics), rho (clipped identically), the iteration counter
(cross-replica `finish_step`).

Optimiser (official): PyTorch Adam(lr 1e-4, betas (0.5, 0.999), eps 1e-8, weight_decay 1e-4),
one for both generators and one for all four discriminators. PyTorch's weight decay is coupled
(L2: g <- g + wd * w before the moments) and its epsilon is added to the bias-corrected
sqrt(v_hat); Keras' Adam has decoupled weight decay and puts epsilon on the uncorrected sqrt(v),
so `TorchAdam` implements PyTorch's update. Learning rate: constant, then linear decay to 0 over
the second half of the iterations (`linear_decay`).

Training samples (`translation_panels`, `strip`): the official 7-panel columns (real,
identity heatmap, identity, translation heatmap, translation, cycle heatmap, cycle).
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

import fq_keras
from networks.ugatit import cam_heatmap, jet_table
from training.checkpoints import checkpoint_state
from training.optimizers import TorchAdam, built_for

NETWORK_NAMES = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")

#----------------------------------------------------------------------------
# Loss terms: per-sample element means, shape (N,), float32.


def _per_sample_mean(x):
    x = tf.cast(x, tf.float32)
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def mse_to(x, target):
    """MSELoss(x, target * ones): mean over each sample's elements of (x - target)^2."""
    return _per_sample_mean(tf.square(tf.cast(x, tf.float32) - target))


def l1(x, y):
    """L1Loss(x, y): mean over each sample's elements of |x - y|."""
    return _per_sample_mean(tf.abs(tf.cast(x, tf.float32) - tf.cast(y, tf.float32)))


def bce_with_logits(logits, target):
    """BCEWithLogitsLoss(logits, target * ones), per-sample mean:
    max(x, 0) - x * t + log(1 + exp(-|x|))."""
    logits = tf.cast(logits, tf.float32)
    return _per_sample_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), tf.constant(target, tf.float32)), logits=logits))


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """U-GAT-IT loss weights (official: adv 1, cycle 10, identity 10, CAM 1000)."""
    adv: float = 1.0
    cycle: float = 10.0
    identity: float = 10.0
    cam: float = 1000.0


def discriminator_loss(real, fake, weights=LossWeights()):
    """Per-sample D loss: adv * sum over D in (GA, LA, GB, LB) of
    [MSE(out_real, 1) + MSE(out_fake, 0)] + [MSE(cam_real, 1) + MSE(cam_fake, 0)].

    Args:
      real, fake: dicts "GA", "LA", "GB", "LB" -> (output (N, h, w, 1), cam_logit (N, 2)), the
        discriminators on the real images of their domain and on the translated fakes.
    Returns:
      (N,) float32.
    """
    total = 0.0
    for key in ("GA", "LA", "GB", "LB"):
        (real_out, real_cam), (fake_out, fake_cam) = real[key], fake[key]
        total += mse_to(real_out, 1.0) + mse_to(fake_out, 0.0)
        total += mse_to(real_cam, 1.0) + mse_to(fake_cam, 0.0)
    return weights.adv * total


def generator_loss(fake, images, cam_logits, weights=LossWeights()):
    """Per-sample G loss terms of both generators.

    Args:
      fake: dict "GA", "LA", "GB", "LB" -> (output, cam_logit) of the discriminators on the
        translations (GA, LA: B->A fakes; GB, LB: A->B fakes).
      images: dict with "A", "B" (reals), "A2B2A", "B2A2B" (cycles), "A2A", "B2B" (identities).
      cam_logits: dict "A2B", "B2A" (translations), "A2A", "B2B" (identities) -> (N, 2).
    Returns:
      dict of (N,) float32: adv (weighted sum of the 8 LSGAN terms), cycle, identity, cam
      (each weighted), and the unweighted cycle_l1, identity_l1.
    """
    adv = 0.0
    for key in ("GA", "LA", "GB", "LB"):
        out, cam = fake[key]
        adv += mse_to(out, 1.0) + mse_to(cam, 1.0)
    cycle_l1 = l1(images["A2B2A"], images["A"]) + l1(images["B2A2B"], images["B"])
    identity_l1 = l1(images["A2A"], images["A"]) + l1(images["B2B"], images["B"])
    # G_{B->A} should find A-like evidence in B (target 1) and none in A (target 0); same for
    # G_{A->B}.
    cam = (bce_with_logits(cam_logits["B2A"], 1.0) + bce_with_logits(cam_logits["A2A"], 0.0)
           + bce_with_logits(cam_logits["A2B"], 1.0) + bce_with_logits(cam_logits["B2B"], 0.0))
    return {"adv": weights.adv * adv, "cycle": weights.cycle * cycle_l1,
            "identity": weights.identity * identity_l1, "cam": weights.cam * cam,
            "cycle_l1": cycle_l1, "identity_l1": identity_l1}

#----------------------------------------------------------------------------
# Optimiser and learning-rate schedule.


def linear_decay(base, iterations, step):
    """Official U-GAT-IT learning rate of the iteration with 0-based index `step`.

    UGATIT-pytorch subtracts base / (iterations // 2) before each iteration s = step + 1 >
    iterations // 2, so lr = base * (1 - (s - half) / half) there, reaching 0 at the last
    iteration (even `iterations`). Works on Python numbers and tensors.
    """
    half = max(iterations // 2, 1)
    s = tf.cast(step, tf.float32) + 1.0
    factor = 1.0 - tf.maximum(s - float(half), 0.0) / float(half)
    return float(base) * tf.maximum(factor, 0.0)


#----------------------------------------------------------------------------
# Training samples: the official 7-panel strips.


def to_uint8(images):
    """[-1, 1] float (N, H, W, 3) -> uint8."""
    return np.uint8(np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255))


def translation_panels(forward, backward, images):
    """The official 7 panels per image for one direction.

    Args:
      forward: the translating generator (e.g. genA2B), backward: the other one.
      images: (N, H, W, 3) float32 in [-1, 1] of the source domain.
    Returns:
      uint8 (N, 7, H, W, 3): real, identity heatmap, identity (backward(x)), translation
      heatmap, translation, cycle heatmap, cycle (backward(forward(x))).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    size = int(images.shape[1])
    identity, _, identity_heatmap = backward(images, training=False)
    fake, _, fake_heatmap = forward(images, training=False)
    cycle, _, cycle_heatmap = backward(fake, training=False)
    table = jet_table()
    panels = [to_uint8(images), cam_heatmap(identity_heatmap, size, table), to_uint8(identity),
              cam_heatmap(fake_heatmap, size, table), to_uint8(fake),
              cam_heatmap(cycle_heatmap, size, table), to_uint8(cycle)]
    panels = [np.asarray(panel) for panel in panels]
    return np.stack(panels, axis=1)


def strip(panels):
    """uint8 (N, 7, H, W, 3) -> one uint8 image (7 H, N W, 3): one column per image (official
    sample layout; the test phase writes each column as its own image)."""
    n, k, h, w, c = panels.shape
    return panels.transpose(1, 2, 0, 3, 4).reshape(k * h, n * w, c)

#----------------------------------------------------------------------------


class UGATITTrainer(keras.Model):
    """Trains the six U-GAT-IT networks (FQ in the global discriminators when they have it).

    Build it inside `strategy.scope()`. `checkpoint_state()` holds the networks (incl.
    spectral-norm vectors and FQ dictionaries), both optimisers and the iteration counter, so a
    restored trainer continues exactly.

    Args:
      networks: dict with the NETWORK_NAMES (networks.ugatit.make_ugatit).
      image_shape: (H, W, C) of the training images (the networks are built for it).
      iterations: training length (the learning rate decays over its second half).
      weights: LossWeights.
      fq_alpha: FQ loss weight alpha (official 1).
      fq_warmup_iterations: paper option: alpha ramps from 0 over this many iterations and
        forward="quantized" FQ layers feed h until then; 0 = off.
      fq_update_cadence: "step" (one dictionary update per D step) or "official" (one per D
        evaluation: D step reals, D step fakes, G step fakes); fq_keras.UPDATE_CADENCES.
      learning_rate, betas, epsilon, weight_decay: TorchAdam (official 1e-4, (0.5, 0.999),
        1e-8, 1e-4).
      decay_lr: linear decay over the second half (official --decay_flag True).
      loss_scaling: wrap both optimisers in LossScaleOptimizer (set the mixed_float16 policy
        before building the networks).
    """

    def __init__(self, networks, image_shape, iterations, weights=LossWeights(), fq_alpha=1.0,
                 learning_rate=1e-4, betas=(0.5, 0.999), epsilon=1e-8, weight_decay=1e-4,
                 decay_lr=True, loss_scaling=False, fq_warmup_iterations=0,
                 fq_update_cadence="step", **kwargs):
        super().__init__(**kwargs)
        missing = [n for n in NETWORK_NAMES if n not in networks]
        if missing:
            raise ValueError(f"UGATITTrainer: networks {missing} missing; give all of "
                             f"{list(NETWORK_NAMES)} (networks.ugatit.make_ugatit).")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"UGATITTrainer: iterations must be a positive integer, got "
                             f"{iterations!r}.")
        for name in NETWORK_NAMES:
            setattr(self, name, networks[name])
            networks[name].build((None,) + tuple(image_shape))
        self.generators = [self.genA2B, self.genB2A]
        self.discriminators = [self.disGA, self.disLA, self.disGB, self.disLB]
        self.image_shape = tuple(image_shape)
        self.total_iterations = iterations
        self.loss_settings = weights
        fq_keras.check_update_cadence(fq_update_cadence, "UGATITTrainer")
        self.fq_alpha = float(fq_alpha)
        self.fq_warmup_iterations = int(fq_warmup_iterations)
        self.fq_update_cadence = fq_update_cadence
        self.base_learning_rate = float(learning_rate)
        self.decay_lr = bool(decay_lr)
        self.loss_scaling = loss_scaling
        self.iteration = self.add_weight(name="iteration", shape=(), dtype="int64",
                                         initializer="zeros", trainable=False,
                                         aggregation="only_first_replica")

        def optimizer(prefix):
            # Explicit names: checkpoint keys are variable paths, and an auto-numbered name
            # (torch_adam_3) would differ between processes.
            return TorchAdam(self.current_learning_rate, betas[0], betas[1], epsilon,
                             coupled_weight_decay=weight_decay, name=f"{prefix}_adam")

        self.g_variables = [v for G in self.generators for v in G.trainable_variables]
        self.d_variables = [v for D in self.discriminators for v in D.trainable_variables]
        self.g_optimizer = built_for(optimizer("g"), self.g_variables, loss_scaling, "g")
        self.d_optimizer = built_for(optimizer("d"), self.d_variables, loss_scaling, "d")
        self.built = True

    # -- state outside the step ------------------------------------------------------------

    def checkpoint_state(self):
        """Every variable a resumed run needs (see training/checkpoints.py)."""
        nets = {name: getattr(self, name) for name in NETWORK_NAMES}
        return checkpoint_state(**nets, g_optimizer=self.g_optimizer,
                                d_optimizer=self.d_optimizer, iteration=self.iteration)

    def current_learning_rate(self):
        """Learning rate of the iteration about to run (read by both optimisers)."""
        if not self.decay_lr:
            return tf.constant(self.base_learning_rate, tf.float32)
        return linear_decay(self.base_learning_rate, self.total_iterations, self.iteration)

    def finish_step(self):
        """Cross-replica part of an iteration: the counter."""
        self.iteration.assign_add(1)

    @property
    def fq_layers(self):
        """{"disGA": [...], "disGB": [...]}: the FQ layers of the global discriminators."""
        return {"disGA": self.disGA.fq_layers, "disGB": self.disGB.fq_layers}

    def log_keys(self):
        keys = {"d_loss", "d_fq_loss", "g_loss", "g_adv_loss", "g_cycle_loss",
                "g_identity_loss", "g_cam_loss", "g_fq_loss", "learning_rate"}
        for d_name, layers in self.fq_layers.items():
            for layer in layers:
                keys |= {f"fq/{d_name}/{layer.name}/perplexity",
                         f"fq/{d_name}/{layer.name}/unused_fraction"}
        return keys

    # -- one iteration ------------------------------------------------------------------------

    def _discriminate_pair(self, real_a, real_b, fake_a2b, fake_b2a):
        """Real then fake through every D (the official order: D_GA(real A), D_LA(real A),
        D_GB(real B), D_LB(real B), then the fakes), so each D runs its power iterations as the
        official code does."""
        real, fake, real_fq, fake_fq = {}, {}, {}, {}
        for key, D, images in (("GA", self.disGA, real_a), ("LA", self.disLA, real_a),
                               ("GB", self.disGB, real_b), ("LB", self.disLB, real_b)):
            (out, cam, _), real_fq[key] = D(images, training=True, return_fq=True)
            real[key] = (out, cam)
        for key, D, images in (("GA", self.disGA, fake_b2a), ("LA", self.disLA, fake_b2a),
                               ("GB", self.disGB, fake_a2b), ("LB", self.disLB, fake_a2b)):
            (out, cam, _), fake_fq[key] = D(images, training=True, return_fq=True)
            fake[key] = (out, cam)
        return real, fake, real_fq, fake_fq

    def _scale(self, optimizer, loss):
        return optimizer.scale_loss(loss) if self.loss_scaling else loss

    def _apply(self, optimizer, tape, loss, variables):
        grads = tape.gradient(self._scale(optimizer, loss), variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])

    def train_step(self, data, global_batch):
        """One iteration on one replica's share of the batch (call inside `strategy.run`).

        Args:
          data: (real A, real B), float NHWC in [-1, 1], this replica's rows.
          global_batch: Python int, pairs per iteration over all replicas.
        Returns:
          (sums, means): dicts of float32 scalars; `sums` are this replica's shares of global
          means (reduce with SUM), `means` are identical on every replica (reduce with MEAN).
        """
        real_a, real_b = (tf.cast(x, tf.float32) for x in data)
        inv_global = 1.0 / float(global_batch)
        alpha = fq_keras.warmup_alpha(self.fq_alpha, self.iteration, self.fq_warmup_iterations)
        fq_keras.set_quantized_forward(self.disGA.fq_layers + self.disGB.fq_layers,
                                       self.iteration, self.fq_warmup_iterations)
        cadence = self.fq_update_cadence
        w = self.loss_settings
        sums, means = {}, {"learning_rate": self.current_learning_rate()}

        def total(per_sample):
            return tf.reduce_sum(per_sample) * inv_global

        # The translations both steps use, under the G tape. The official code runs them again
        # for its G step, with the same G weights (the D step does not change them) and no
        # randomness in G: the same numbers, so they are computed once here.
        g_tape = tf.GradientTape()
        with g_tape:
            fake_a2b, cam_a2b, _ = self.genA2B(real_a, training=True)
            fake_b2a, cam_b2a, _ = self.genB2A(real_b, training=True)

        # D step, outside the G tape, on the translations without their gradient.
        with tf.GradientTape() as tape:
            real, fake, real_fq, fake_fq = self._discriminate_pair(
                real_a, real_b, tf.stop_gradient(fake_a2b), tf.stop_gradient(fake_b2a))
            d_gan = total(discriminator_loss(real, fake, w))
            d_fq = sum(fq_keras.fq_loss(real_fq[k], global_batch, alpha)
                       + fq_keras.fq_loss(fake_fq[k], global_batch, alpha) for k in ("GA", "GB"))
            d_loss = d_gan + d_fq
        self._apply(self.d_optimizer, tape, d_loss, self.d_variables)
        for key, d_name in (("GA", "disGA"), ("GB", "disGB")):
            layers = self.fq_layers[d_name]
            usage = fq_keras.update_after_phase("D", cadence, layers, real_fq[key], fake_fq[key])
            for layer, stats in zip(layers, usage):
                means[f"fq/{d_name}/{layer.name}/perplexity"] = stats["perplexity"]
                means[f"fq/{d_name}/{layer.name}/unused_fraction"] = stats["unused_fraction"]
        sums.update(d_loss=d_gan, d_fq_loss=d_fq)

        # G step, with the updated D (the tape records on).
        with g_tape:
            fake_a2b2a = self.genB2A(fake_a2b, training=True)[0]
            fake_b2a2b = self.genA2B(fake_b2a, training=True)[0]
            fake_a2a, cam_a2a, _ = self.genB2A(real_a, training=True)
            fake_b2b, cam_b2b, _ = self.genA2B(real_b, training=True)
            fake, fake_fq = {}, {}
            for key, D, images in (("GA", self.disGA, fake_b2a), ("LA", self.disLA, fake_b2a),
                                   ("GB", self.disGB, fake_a2b), ("LB", self.disLB, fake_a2b)):
                (out, cam, _), fake_fq[key] = D(images, training=True, return_fq=True)
                fake[key] = (out, cam)
            terms = generator_loss(
                fake, {"A": real_a, "B": real_b, "A2B2A": fake_a2b2a, "B2A2B": fake_b2a2b,
                       "A2A": fake_a2a, "B2B": fake_b2b},
                {"A2B": cam_a2b, "B2A": cam_b2a, "A2A": cam_a2a, "B2B": cam_b2b}, w)
            g_gan = total(terms["adv"] + terms["cycle"] + terms["identity"] + terms["cam"])
            g_fq = sum(fq_keras.fq_loss(fake_fq[k], global_batch, alpha) for k in ("GA", "GB"))
            g_loss = g_gan + g_fq
        self._apply(self.g_optimizer, g_tape, g_loss, self.g_variables)
        for G in self.generators:
            G.clip_rho()
        for key, d_name in (("GA", "disGA"), ("GB", "disGB")):
            fq_keras.update_after_phase("G", cadence, self.fq_layers[d_name], fake_fq[key])
        sums.update(g_loss=g_gan, g_fq_loss=g_fq, g_adv_loss=total(terms["adv"]),
                    g_cycle_loss=total(terms["cycle_l1"]),
                    g_identity_loss=total(terms["identity_l1"]), g_cam_loss=total(terms["cam"]))
        return sums, means

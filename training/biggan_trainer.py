"""The BigGAN / FQ-BigGAN trainer (BigGAN-PyTorch `train_fns.GAN_training_function`).

One training iteration (one G update) runs, in the official order:

    d_steps x  D step: for each of `accumulations` minibatches, fresh z and labels y,
                       fakes = G(z, y) (train mode, no gradient), D(concat([fakes, reals]),
                       concat([y, real labels])) in ONE forward (BigGAN-PyTorch's G_D without
                       split_D: one spectral-norm power iteration per D step), hinge loss
                       + alpha * (fq(real) + fq(fake)); gradients summed over the minibatches,
                       one Adam update; then ONE EMA update of every FQ dictionary from all of
                       this step's real and fake features (FQ update cadence "step"; at
                       "official" one per D forward, as FQ-BigGAN updates in every training-
                       mode forward: fq_keras.gan).
    1 x        G step: for each of `accumulations` minibatches, fresh z and y,
                       loss -D(G(z, y)) + alpha * fq(fake); one Adam update. No FQ update at
                       "step"; one per D forward (per minibatch) at "official".
    finish_step        (cross-replica) iteration += 1; G_ema <- decay G_ema + (1 - decay) G over
                       every float variable of G, buffers included (BN running statistics, SN u
                       and sv, as BigGAN-PyTorch's `ema` over the state dict), with decay = 0
                       (a copy) while iteration < ema_start.

Losses (per sample, summed over the replica's rows and divided by the global batch times the
accumulations, so gradients summed over replicas and minibatches equal the official means):

    D: relu(1 - D(x)) + relu(1 + D(G(z))) + alpha * sum_l c_l mean_{HWC}((sg(q_l) - h_l)^2)
       over real and fake rows;   G: -D(G(z)) + alpha * the FQ term of the fakes.

Labels: the networks take integer class indices; the dataset's one-hot rows are converted with
argmax, and the labels of fakes are drawn from `class_probabilities` (the dataset's label
frequencies; uniform for CIFAR, as BigGAN-PyTorch's `y_.sample_()`).

tf.distribute: every per-sample random draw (z, y) goes through `replica_random`, so N replicas
draw the numbers one device draws for the global batch. G's batch norms normalise with each
replica's own batch statistics (BigGAN-PyTorch without --cross_replica; build G with
cross_replica=True for synchronised BN), so N replicas do not equal one device unless BN is
synchronised; every non-trainable state (BN running statistics, SN vectors, FQ dictionaries,
G_ema, the iteration counter) is updated from all-reduced statistics or in cross-replica context
and stays identical on every replica.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

import fq_keras
from networks.layers import replica_random
from training.checkpoints import checkpoint_state
from training.optimizers import TorchAdam, built_for

#----------------------------------------------------------------------------
# Losses.


def d_hinge(real_logits, fake_logits):
    """Per-sample hinge losses of D: (relu(1 - D(x)) (N,), relu(1 + D(G(z))) (M,)), float32.

    Their batch means summed are BigGAN-PyTorch's `loss_hinge_dis`.
    """
    real = tf.reshape(tf.cast(real_logits, tf.float32), [-1])
    fake = tf.reshape(tf.cast(fake_logits, tf.float32), [-1])
    return tf.nn.relu(1.0 - real), tf.nn.relu(1.0 + fake)


def g_hinge(fake_logits):
    """Per-sample G loss -D(G(z)) (N,), float32; its mean is `loss_hinge_gen`."""
    return -tf.reshape(tf.cast(fake_logits, tf.float32), [-1])

#----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BigGANSettings:
    """Optimisation settings of one run (defaults: scripts/launch_C10.sh)."""
    d_steps: int = 4                  # D updates per G update (--num_D_steps).
    accumulations: int = 1            # Minibatches per update (--num_{G,D}_accumulations).
    g_learning_rate: float = 2e-4     # --G_lr.
    d_learning_rate: float = 2e-4     # --D_lr.
    betas: tuple = (0.0, 0.999)       # Adam (beta_1, beta_2) of both networks.
    epsilon: float = 1e-8             # torch Adam epsilon (--adam_eps).
    ema_decay: float = 0.9999         # G_ema decay (--ema_decay).
    ema_start: int = 1000             # G_ema copies G while iteration < ema_start (--ema_start).
    fq_alpha: float = 1.0             # FQ loss weight alpha (the layers hold the commitment c).
    fq_warmup_iterations: int = 0     # Paper option: alpha ramps from 0 over this, and
                                      # forward="quantized" FQ layers feed h until then; 0 = off.
    fq_update_cadence: str = "step"   # fq_keras.UPDATE_CADENCES: one dictionary update per D
                                      # step, or "official": one per D forward (G step included).

    def __post_init__(self):
        for name in ("d_steps", "accumulations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BigGANSettings: {name} must be an integer >= 1, got {value!r}.")
        if not (self.g_learning_rate >= 0 and self.d_learning_rate >= 0):
            raise ValueError("BigGANSettings: learning rates must be >= 0.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"BigGANSettings: ema_decay must be in [0, 1), got "
                             f"{self.ema_decay!r}.")
        if self.ema_start < 0 or self.fq_alpha < 0 or self.fq_warmup_iterations < 0:
            raise ValueError("BigGANSettings: ema_start, fq_alpha and fq_warmup_iterations must "
                             "be >= 0.")
        fq_keras.check_update_cadence(self.fq_update_cadence, "BigGANSettings")

    @property
    def batches_per_iteration(self):
        """Real minibatches one iteration consumes (each D step and accumulation takes one)."""
        return self.d_steps * self.accumulations


def _state_key(variable):
    """A variable's path without its network's name, to pair G's variables with G_ema's."""
    return variable.path.split("/", 1)[-1]

#----------------------------------------------------------------------------


class BigGANTrainer(keras.Model):
    """Trains a BigGAN G and projection D with FQ, keeping G_ema (`Gs`).

    Build it inside `strategy.scope()`. `checkpoint_state()` lists every variable a resumed run
    needs: G, Gs, D (with FQ dictionaries, SN vectors, BN statistics), both optimizers, the
    iteration counter and the RNG state.

    Args:
      generator, discriminator: networks.biggan BigGANGenerator / BigGANDiscriminator (built or
        not). Give them fixed names (name="G", name="D"): checkpoint keys and optimizer slot
        names derive from variable paths, which start with the network's name.
      settings: BigGANSettings.
      class_probabilities: (num_classes,) frequencies the fakes' labels are drawn from; None =
        uniform.
      loss_scaling: wrap both optimizers in LossScaleOptimizer (set the mixed_float16 policy
        before building the networks).
      seed: seeds z and the fakes' labels.
    """

    def __init__(self, generator, discriminator, settings=BigGANSettings(),
                 class_probabilities=None, loss_scaling=False, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.G, self.D = generator, discriminator
        self.settings = settings
        self.num_classes = generator.num_classes
        if discriminator.num_classes != self.num_classes:
            raise ValueError(f"BigGANTrainer: G has {self.num_classes} classes, D "
                             f"{discriminator.num_classes}.")
        self.z_dim = generator.dim_z
        self.class_cdf = self._class_cdf(class_probabilities)
        for network in (generator, discriminator):
            if not network.built:
                network.build()
        self.Gs = type(generator).from_config({**generator.get_config(), "name": "Gs"})
        self.Gs.build()
        # Untracked: Keras would otherwise list these variables as the trainer's own weights.
        object.__setattr__(self, "_ema_pairs", list(zip(self.Gs.variables, self.G.variables)))
        for gs, g in self._ema_pairs:
            if _state_key(gs) != _state_key(g) or tuple(gs.shape) != tuple(g.shape):
                raise ValueError(f"BigGANTrainer: G_ema variable {gs.path} does not match G's "
                                 f"{g.path}.")
        self.loss_scaling = loss_scaling
        beta_1, beta_2 = settings.betas
        # Explicit names: checkpoint keys and slot names must not depend on how many
        # optimizers the process created before (Keras auto-numbers adam, adam_1, ...).
        # BigGAN-PyTorch's optim.Adam (weight_decay 0): epsilon on the bias-corrected sqrt(v).
        self.g_optimizer = TorchAdam(settings.g_learning_rate, beta_1=beta_1, beta_2=beta_2,
                                     epsilon=settings.epsilon, name="g_adam")
        self.d_optimizer = TorchAdam(settings.d_learning_rate, beta_1=beta_1, beta_2=beta_2,
                                     epsilon=settings.epsilon, name="d_adam")
        self.g_optimizer = built_for(self.g_optimizer, self.G.trainable_variables, loss_scaling,
                                     "g")
        self.d_optimizer = built_for(self.d_optimizer, self.D.trainable_variables, loss_scaling,
                                     "d")
        # G updates done (BigGAN-PyTorch's state_dict['itr']).
        self.iteration = self.add_weight(name="iteration", shape=(), dtype="int64",
                                         initializer="zeros", trainable=False,
                                         aggregation="only_first_replica")
        self.seed_generator = keras.random.SeedGenerator(seed, name="biggan_seed_generator")
        self.update_ema(decay=0.0)
        self.built = True

    def _class_cdf(self, probabilities):
        if probabilities is None:
            probabilities = np.ones(self.num_classes)
        probabilities = np.asarray(probabilities, np.float64).reshape(-1)
        if probabilities.shape != (self.num_classes,) or np.any(probabilities < 0) or \
                not probabilities.sum() > 0:
            raise ValueError(f"BigGANTrainer: class_probabilities must be {self.num_classes} "
                             "non-negative frequencies with a positive sum.")
        cdf = np.cumsum(probabilities / probabilities.sum())
        cdf[-1] = 1.0
        return cdf.astype(np.float32)

    # -- state outside the step ------------------------------------------------------------

    def log_keys(self):
        """Every scalar `train_step` logs (the training loop accumulates them per tick)."""
        keys = {"g_loss", "g_fq_loss", "d_loss", "d_loss_real", "d_loss_fake", "d_fq_loss",
                "d_real_score", "d_fake_score", "alpha_fq"}
        for layer in self.D.fq_layers:
            keys |= {f"fq/{layer.name}/perplexity", f"fq/{layer.name}/unused_fraction"}
        return keys

    def checkpoint_state(self):
        """Every variable a resumed run needs (see training/checkpoints.py)."""
        return checkpoint_state(G=self.G, Gs=self.Gs, D=self.D, g_optimizer=self.g_optimizer,
                                d_optimizer=self.d_optimizer, iteration=self.iteration,
                                seed_generator=self.seed_generator)

    def update_ema(self, decay):
        """Gs <- decay * Gs + (1 - decay) * G for every float variable (weights and buffers);
        other variables are copied. decay = 0 copies everything."""
        decay = tf.convert_to_tensor(decay, tf.float32)
        for gs, g in self._ema_pairs:
            if gs.dtype in ("float32", "float16", "float64", "bfloat16"):
                d = tf.cast(decay, gs.dtype)
                gs.assign(gs * d + g * (1 - d))
            else:
                gs.assign(g)

    def ema_decay_at(self, iteration):
        """BigGAN-PyTorch `ema.update(itr)`: 0 (copy) while itr < ema_start, then the decay."""
        start = tf.constant(self.settings.ema_start, tf.int64)
        return tf.where(tf.cast(iteration, tf.int64) < start, 0.0, self.settings.ema_decay)

    def fq_alpha_at(self, iteration):
        """alpha for the iteration after `iteration` G updates (linear warm-up if set)."""
        return fq_keras.warmup_alpha(self.settings.fq_alpha, iteration,
                                     self.settings.fq_warmup_iterations)

    def finish_step(self):
        """Cross-replica part of an iteration (after G's update): counter, then G_ema."""
        self.iteration.assign_add(1)
        self.update_ema(self.ema_decay_at(self.iteration))

    # -- random draws --------------------------------------------------------------------------

    def sample_latents(self, batch):
        """z ~ N(0, I) for this replica's rows of the global batch: (batch, z_dim)."""
        return replica_random("normal", [batch, self.z_dim], self.seed_generator)

    def sample_labels(self, batch):
        """Class indices (batch,) int32 drawn from class_probabilities (inverse CDF of U[0, 1))."""
        u = replica_random("uniform", [batch], self.seed_generator)
        labels = tf.searchsorted(tf.constant(self.class_cdf), u, side="right")
        return tf.minimum(tf.cast(labels, tf.int32), self.num_classes - 1)

    # -- one iteration ------------------------------------------------------------------------

    def discriminate(self, images, labels):
        """D in train mode -> (logits float32 (N,), FQ lookups aligned with D.fq_layers)."""
        logits, lookups = self.D(images, labels, training=True, return_fq=True)
        return tf.reshape(tf.cast(logits, tf.float32), [-1]), lookups

    def _gradients(self, optimizer, tape, loss, variables):
        scaled = optimizer.scale_loss(loss) if self.loss_scaling else loss
        return tape.gradient(scaled, variables)

    @staticmethod
    def _accumulate(total, grads):
        if total is None:
            return list(grads)
        return [g if t is None else t if g is None else
                tf.convert_to_tensor(t) + tf.convert_to_tensor(g) for t, g in zip(total, grads)]

    @staticmethod
    def _apply(optimizer, grads, variables):
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])

    def train_step(self, batches, global_batch):
        """One iteration on this replica's share of the data (call inside `strategy.run`).

        Args:
          batches: sequence of settings.batches_per_iteration (reals, labels) pairs, D step
            major (batch k feeds D step k // accumulations): reals float (n, R, R, 3) in
            [-1, 1], labels float one-hot (n, num_classes) or int (n,).
          global_batch: Python int, images per minibatch over all replicas.

        Returns:
          (sums, means): dicts of float32 scalars; `sums` are per-replica shares of global
          means (reduce with SUM), `means` are identical on every replica (reduce with MEAN).
        """
        settings = self.settings
        if len(batches) != settings.batches_per_iteration:
            raise ValueError(f"BigGANTrainer.train_step: got {len(batches)} minibatches, one "
                             f"iteration takes d_steps x accumulations = "
                             f"{settings.batches_per_iteration}.")
        inv_total = 1.0 / float(global_batch * settings.accumulations)
        alpha = self.fq_alpha_at(self.iteration)
        fq_keras.set_quantized_forward(self.D.fq_layers, self.iteration,
                                       settings.fq_warmup_iterations)
        cadence = settings.fq_update_cadence
        d_vars = self.D.trainable_variables
        g_vars = self.G.trainable_variables
        totals = dict(d_loss_real=0.0, d_loss_fake=0.0, d_fq_loss=0.0, d_real_score=0.0,
                      d_fake_score=0.0)
        usage = []

        for step in range(settings.d_steps):
            grads, step_lookups = None, []
            for a in range(settings.accumulations):
                reals, labels = batches[step * settings.accumulations + a]
                reals = tf.cast(reals, tf.float32)
                real_labels = self._int_labels(labels)
                n = tf.shape(reals)[0]
                z = self.sample_latents(n)
                fake_labels = self.sample_labels(n)
                fakes = tf.stop_gradient(tf.cast(self.G(z, fake_labels, training=True),
                                                 tf.float32))
                with tf.GradientTape() as tape:
                    logits, lookups = self.discriminate(
                        tf.concat([fakes, reals], 0), tf.concat([fake_labels, real_labels], 0))
                    fake_logits, real_logits = logits[:n], logits[n:]
                    loss_real, loss_fake = d_hinge(real_logits, fake_logits)
                    d_real = tf.reduce_sum(loss_real) * inv_total
                    d_fake = tf.reduce_sum(loss_fake) * inv_total
                    # Per-sample FQ losses of the fake and real rows, summed, over the global
                    # batch: alpha * (mean fq(real) + mean fq(fake)).
                    d_fq = fq_keras.fq_loss(lookups, global_batch * settings.accumulations, alpha)
                    d_loss = d_real + d_fake + d_fq
                grads = self._accumulate(
                    grads, self._gradients(self.d_optimizer, tape, d_loss, d_vars))
                step_lookups.append(lookups)
                totals["d_loss_real"] += d_real
                totals["d_loss_fake"] += d_fake
                totals["d_fq_loss"] += d_fq
                totals["d_real_score"] += tf.reduce_sum(real_logits) * inv_total
                totals["d_fake_score"] += tf.reduce_sum(fake_logits) * inv_total
            self._apply(self.d_optimizer, grads, d_vars)
            # "step": the one dictionary update of this D step, from all its fake and real
            # features; "official": one per D forward (fakes and reals together).
            usage = fq_keras.update_after_phase("D", cadence, self.D.fq_layers, *step_lookups)

        grads, g_lookups = None, []
        g_gan_total = g_fq_total = 0.0
        for _ in range(settings.accumulations):
            n = tf.shape(batches[0][0])[0]
            z = self.sample_latents(n)
            fake_labels = self.sample_labels(n)
            with tf.GradientTape() as tape:
                fakes = self.G(z, fake_labels, training=True)
                fake_logits, lookups = self.discriminate(fakes, fake_labels)
                g_gan = tf.reduce_sum(g_hinge(fake_logits)) * inv_total
                g_fq = fq_keras.fq_loss(lookups, global_batch * settings.accumulations, alpha)
                g_loss = g_gan + g_fq
            grads = self._accumulate(grads, self._gradients(self.g_optimizer, tape, g_loss, g_vars))
            g_lookups.append(lookups)
            g_gan_total += g_gan
            g_fq_total += g_fq
        self._apply(self.g_optimizer, grads, g_vars)
        fq_keras.update_after_phase("G", cadence, self.D.fq_layers, *g_lookups)

        d_steps = float(settings.d_steps)
        sums = {k: v / d_steps for k, v in totals.items()}
        sums["d_loss"] = sums["d_loss_real"] + sums["d_loss_fake"]
        sums.update(g_loss=g_gan_total, g_fq_loss=g_fq_total)
        means = {"alpha_fq": alpha}
        for layer, stats in zip(self.D.fq_layers, usage):
            means[f"fq/{layer.name}/perplexity"] = stats["perplexity"]
            means[f"fq/{layer.name}/unused_fraction"] = stats["unused_fraction"]
        return sums, means

    def _int_labels(self, labels):
        labels = tf.convert_to_tensor(labels)
        if labels.shape.rank == 2:
            return tf.argmax(labels, axis=-1, output_type=tf.int32)
        return tf.cast(labels, tf.int32)

    # -- sampling -----------------------------------------------------------------------------

    def generate(self, z, labels, training=False, network="Gs"):
        """Images from G_ema (or G) without changing any state.

        training=True samples as BigGAN-PyTorch measures its CIFAR models (G_ema in train mode:
        batch statistics of this batch); the BN running statistics and SN vectors that such a
        forward would update are restored afterwards, so sampling never alters training.

        Args:
          z: (N, z_dim) float. labels: (N,) int class indices.
        Returns:
          float32 (N, R, R, 3) in [-1, 1].
        """
        net = self.Gs if network == "Gs" else self.G
        if not training:
            return tf.cast(net(z, labels, training=False), tf.float32)
        state = [(v, tf.identity(v)) for v in net.non_trainable_variables]
        images = tf.cast(net(z, labels, training=True), tf.float32)
        for variable, value in state:
            variable.assign(value)
        return images

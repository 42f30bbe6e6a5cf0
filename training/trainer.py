"""The ProGAN / StyleGAN / StyleGAN2 trainer, with feature quantization in the discriminator.

One training iteration runs the phases of NVlabs' training loop, in their order:

    Gmain   G loss on fakes (+ FQ loss of the fake features, weight alpha); at the "official"
            FQ update cadence, an EMA update of every active dictionary from those fakes
    Greg    path-length regularisation (StyleGAN2; every `pl_interval` iterations, x interval)
    Dmain   D loss on reals and fakes (+ FQ losses of both; + R1 or WGAN-GP when not lazy),
            then the EMA updates of every active FQ dictionary: ONE from those real + fake
            features ("step", the default), or one from the reals then one from the fakes
            ("official"; fq_keras.gan)
    Dreg    lazy R1 (StyleGAN2; every `r1_interval` iterations, x interval)

SQ-GAN (a StyleGAN2 generator built with `sq_num_codes > 0`, see `SQSettings`): w = mapping(z)
is quantised by `G.sq` before synthesis in every phase (the dlatent average is updated from the
continuous w); Gmain adds weight * (L_sq + L_uf) and counts the codebook usage of w; Dmain adds
the quantisation-based consistency term weight * ||D(x) - D(x')||^2 with x' = G(z + eps).

Each phase is its own method call (`run_phase`), so the training loop traces each phase once
(G main and D main together when nothing runs between them; `loop.CompiledStep`) and runs the
ones an iteration needs (`phases_of_iteration`; tf.distribute does not allow optimizer updates
inside `tf.cond`). Everything else that varies per step (lod, the FQ weight
alpha, the paper warm-up's switch to the quantised D forward) is computed in-graph from the
image counter `nimg`.

Losses are per-sample sums divided by the global batch (Keras sums gradients over replicas).
Non-trainable state stays identical on every replica: FQ dictionaries, the dlatent average and
pl_mean are updated from all-reduced statistics; Gs and nimg are updated in cross-replica
context (`finish_step`).
"""

import dataclasses

import keras
import tensorflow as tf

import fq_keras
from datasets import fade_reals
from fq_keras.style_quantization import sq_consistency_loss, sq_generator_loss
from networks.layers import BatchLanes, MinibatchStddev, lanes_keep_groups, replica_random
from training import losses
from training.checkpoints import checkpoint_state
from training.optimizers import built_for, lazy_adam

#----------------------------------------------------------------------------

PHASES = ("Gmain", "Greg", "Dmain", "Dreg")   # NVlabs' phase names, in iteration order


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """Loss and regularisation of one model family (NVlabs defaults per preset)."""
    kind: str                       # "wgan_gp" (ProGAN) or "logistic" (StyleGAN, StyleGAN2).
    wgan_lambda: float = 10.0       # Gradient-penalty weight.
    wgan_epsilon: float = 0.001     # Drift weight epsilon * D(x)^2.
    wgan_target: float = 1.0        # Target gradient norm.
    cond_weight: float = 1.0        # ProGAN auxiliary-classifier loss weight (conditional only).
    r1_gamma: float = 0.0           # R1 weight gamma (penalty gamma/2 * |grad|^2); 0 = off.
    r1_interval: int = 1            # 1 = R1 in every D step; k > 1 = lazy, every k steps (x k).
    pl_weight: float = 0.0          # Path-length weight; 0 = off.
    pl_interval: int = 1            # Lazy path-length interval (StyleGAN2: 4).
    # An interval k > 1 sets Adam's lazy-regularisation ratio k / (k + 1) whatever the weight,
    # as both references do (their G_reg_interval / D_reg_interval): StyleGAN2 with gamma 0
    # keeps D's ratio 16/17 and simply has no Dreg update.
    pl_batch_shrink: int = 2        # pl_batch = batch / shrink.
    pl_decay: float = 0.01          # pl_mean moving-average rate.
    style_mixing_prob: float = 0.0  # Style-mixing probability (StyleGAN: 0.9).
    dlatent_avg_beta: float = 0.995  # dlatent average decay (truncation trick).
    g_ema_kimg: float = 10.0        # Gs half-life in kimg: beta = 0.5^(batch / (kimg * 1000)).
    g_ema_rampup: float = 0.0       # > 0: half-life <= rampup * images seen (stylegan2-ada's
                                    # short-run fix, 0.05 there); 0 = off (the paper configs).
    g_ema_beta: float = 0.0         # > 0: this beta every step instead of the half-life
                                    # (ProGAN's G_smoothing 0.999); 0 = the half-life.

    def __post_init__(self):
        if self.kind not in ("wgan_gp", "logistic"):
            raise ValueError(f"LossSettings: kind must be 'wgan_gp' or 'logistic', got {self.kind!r}.")
        if self.r1_interval < 1 or self.pl_interval < 1 or self.pl_batch_shrink < 1:
            raise ValueError("LossSettings: intervals and pl_batch_shrink must be >= 1.")
        if not 0 <= self.g_ema_beta < 1:
            raise ValueError(f"LossSettings: g_ema_beta must be in [0, 1), got {self.g_ema_beta}.")

    def g_ema_beta_at(self, global_batch, nimg):
        """Gs decay beta of the step that shows `global_batch` images after `nimg` (float64).

        ProGAN: the fixed g_ema_beta. StyleGAN / StyleGAN2: 0.5^(global_batch / half-life), the
        half-life g_ema_kimg * 1000 images, with the ramp-up at most g_ema_rampup * (nimg +
        global_batch) images.
        """
        if self.g_ema_beta > 0:
            return tf.constant(self.g_ema_beta, tf.float64)
        half_life = tf.constant(self.g_ema_kimg * 1000.0, tf.float64)
        if self.g_ema_rampup > 0:
            seen = tf.cast(nimg + global_batch, tf.float64)
            half_life = tf.minimum(half_life, seen * self.g_ema_rampup)
        return 0.5 ** (tf.cast(global_batch, tf.float64) / tf.maximum(half_life, 1e-8))

    @property
    def lazy_r1(self):
        return self.r1_gamma > 0 and self.r1_interval > 1

    @property
    def lazy_pl(self):
        return self.pl_weight > 0


LOSS_PRESETS = {
    "progan": LossSettings("wgan_gp"),
    "stylegan": LossSettings("logistic", r1_gamma=10.0, style_mixing_prob=0.9),
    "stylegan2": LossSettings("logistic", r1_gamma=10.0, r1_interval=16, pl_weight=2.0,
                              pl_interval=4, style_mixing_prob=0.9),
}


@dataclasses.dataclass(frozen=True)
class FQSettings:
    """How the FQ loss enters the objective, L = L_GAN + alpha * L_FQ (the layers hold c), and
    how often the dictionaries update."""
    alpha: float = 1.0              # Final FQ loss weight (official code: 1).
    warmup_kimg: float = 0.0        # Paper option: alpha ramps linearly from 0 over this, and
                                    # forward="quantized" layers feed h until it ends; 0 = off.
    update_cadence: str = "step"    # fq_keras.UPDATE_CADENCES: "step" (one update per D step)
                                    # or "official" (one per D evaluation of Gmain and Dmain).

    def __post_init__(self):
        fq_keras.check_update_cadence(self.update_cadence, "FQSettings")

    def alpha_at(self, kimg):
        return fq_keras.warmup_alpha(self.alpha, kimg, self.warmup_kimg)


@dataclasses.dataclass(frozen=True)
class SQSettings:
    """SQ-GAN loss terms (the codebook's own settings live in the generator's `sq` layer).

    G: L_adv + weight * (L_sq + L_uf); D: L_adv + cr_weight * L_qcr (sqgan.md's objective).
    Used only when the generator has style quantization (`G.sq` is not None).
    """
    weight: float = 0.01            # Weight of the VQ (codebook + commitment) and uniformity terms.
    uniformity: bool = True         # False: leave L_uf out (the paper's ablation).
    cr_weight: float = 0.01         # Weight of the consistency term L_qcr on D; 0 = off.
    cr_sigma: float = 0.1           # Std of the latent perturbation eps ~ N(0, sigma^2).

    def __post_init__(self):
        if self.weight < 0 or self.cr_weight < 0 or self.cr_sigma < 0:
            raise ValueError("SQSettings: weight, cr_weight and cr_sigma must be >= 0.")


#----------------------------------------------------------------------------


class GANTrainer(keras.Model):
    """Trains G and D (and keeps Gs, the EMA of G) of a ProGAN / StyleGAN / StyleGAN2 family.

    Build it inside `strategy.scope()`. Checkpoint it with `tf.train.Checkpoint(trainer=...)`:
    that holds G, D, Gs, both optimizers, nimg, pl_mean, the FQ dictionaries and every RNG
    state, so a restored trainer continues exactly.

    Args:
      generator, discriminator: networks from `networks.progan`, `.stylegan` or `.stylegan2`.
      loss: LossSettings (see LOSS_PRESETS).
      schedule: training.schedule.ProgressiveSchedule; lod comes from it (progressive iff its
        initial resolution is below the final one).
      fq: FQSettings (alpha and its warm-up).
      sq: SQSettings (SQ-GAN loss weights); used when the generator has `sq`.
      learning_rate, betas, epsilon: Adam (official: 0.001 or 0.002, (0, 0.99), 1e-8).
      d_lr_multiplier: D's learning rate over G's (official: 1, equal rates; the StyleGAN2
        demo preset's is 3). Both also take their lazy-regularisation ratio.
      loss_scaling: wrap both optimizers in LossScaleOptimizer (set the mixed_float16
        policy before building the networks).
      seed: seeds latents, noise of the regularisers and mixing factors.
      lanes: Dmain's fakes (StyleGAN synthesis and D on them) and Dreg's R1 on the reals
        as this many `BatchLanes` where they keep D's minibatch-stddev groups whole and the
        loss is logistic without the SQ consistency term; 1 = the batch as one. Lanes change
        the order of the weight gradients' sums, no random number
        (`training.distribute.batch_lanes` chooses: 2 for ops on one thread each on a CPU
        with 2 or more cores).
    """

    def __init__(self, generator, discriminator, loss, schedule, fq=FQSettings(),
                 learning_rate=0.002, betas=(0.0, 0.99), epsilon=1e-8, loss_scaling=False,
                 seed=0, sq=SQSettings(), d_lr_multiplier=1.0, lanes=1, **kwargs):
        super().__init__(**kwargs)
        self.G, self.D = generator, discriminator
        self.Gs = type(generator).from_config({**generator.get_config(), "name": "Gs"})
        self.loss_settings, self.schedule, self.fq_settings = loss, schedule, fq
        self.sq_settings = sq
        # SQ-GAN: G.sq is a sub-layer of G (learned by the G optimizer, averaged into Gs like
        # any weight; its usage counts are a buffer, copied).
        self.use_sq = getattr(generator, "sq", None) is not None
        self.use_sq_cr = self.use_sq and sq.cr_weight > 0
        self.progressive = schedule.initial_resolution < schedule.resolution
        self.is_style = hasattr(generator, "mapping")
        self.auxiliary_labels = getattr(discriminator, "label_mode", None) == "auxiliary"
        self.c_dim = getattr(generator, "c_dim", 0)
        self.z_dim = generator.z_dim
        self.loss_scaling = loss_scaling
        self.g_optimizer, self.g_lr_ratio = lazy_adam(learning_rate, betas, epsilon,
                                                      loss.pl_interval, "g_adam")
        self.d_optimizer, self.d_lr_ratio = lazy_adam(learning_rate * d_lr_multiplier, betas,
                                                      epsilon, loss.r1_interval, "d_adam")
        self.d_lr_multiplier = d_lr_multiplier
        self.lanes = int(lanes)
        self.mbstd_group_sizes = [layer.group_size for layer in discriminator._flatten_layers()
                                  if isinstance(layer, MinibatchStddev)]
        self.g_optimizer = built_for(self.g_optimizer, self.G.trainable_variables, loss_scaling,
                                     "g")
        self.d_optimizer = built_for(self.d_optimizer, self.D.trainable_variables, loss_scaling,
                                     "d")
        self.nimg = self.add_weight(name="nimg", shape=(), dtype="int64", initializer="zeros",
                                    trainable=False, aggregation="only_first_replica")
        self.segment_start_nimg = self.add_weight(
            name="segment_start_nimg", shape=(), dtype="int64", initializer="zeros",
            trainable=False, aggregation="only_first_replica")
        self.pl_mean = self.add_weight(name="pl_mean", shape=(), initializer="zeros",
                                       trainable=False, aggregation="only_first_replica")
        self.seed_generator = keras.random.SeedGenerator(seed, name="trainer_seed_generator")
        self.copy_to_gs()
        self.built = True

    # -- state outside the step ------------------------------------------------------------

    def log_keys(self):
        """Every scalar a phase can log (the training loop accumulates them per tick)."""
        keys = {"g_loss", "g_fq_loss", "d_loss", "d_fq_loss", "d_real_score", "d_fake_score",
                "alpha_fq", "lod", "g_pl_penalty", "pl_mean", "d_r1_penalty",
                "d_gradient_penalty"}
        for layer in self.D.fq_layers:
            keys |= {f"fq/{layer.name}/perplexity", f"fq/{layer.name}/unused_fraction"}
        if self.use_sq:
            keys |= {"g_sq_loss", "d_sq_cr_loss"}
        return keys

    def checkpoint_state(self):
        """Every variable a resumed run needs (see training/checkpoints.py)."""
        return checkpoint_state(
            G=self.G, Gs=self.Gs, D=self.D, g_optimizer=self.g_optimizer,
            d_optimizer=self.d_optimizer, nimg=self.nimg,
            segment_start_nimg=self.segment_start_nimg, pl_mean=self.pl_mean,
            seed_generator=self.seed_generator)

    def set_learning_rate(self, learning_rate):
        """Sets G's learning rate and D's (times d_lr_multiplier), each times its
        lazy-regularisation ratio c."""
        for optimizer, ratio in ((self.g_optimizer, self.g_lr_ratio),
                                 (self.d_optimizer, self.d_lr_ratio * self.d_lr_multiplier)):
            optimizer.learning_rate.assign(learning_rate * ratio)

    def reset_optimizers(self):
        """Zeroes Adam's moments and step counters (NVlabs resets them at every stage change)."""
        for optimizer in (self.g_optimizer, self.d_optimizer):
            inner = getattr(optimizer, "inner_optimizer", optimizer)
            for variable in inner.variables:
                if variable.path.endswith(("_momentum", "_velocity", "/iteration")):
                    variable.assign(tf.zeros_like(variable))

    def copy_to_gs(self, beta=None):
        """Gs <- G + (Gs - G) * beta for trainable weights; buffers copied (None: copy all)."""
        for gs, g in zip(self.Gs.weights, self.G.weights):
            if g.trainable and beta is not None:
                gs.assign(g + (gs - g) * beta)
            else:
                gs.assign(g)

    def update_gs(self, global_batch):
        """Gs EMA of an iteration (cross-replica), with the beta of the iteration's nimg: call
        after the iteration's last G update and before `count_images`."""
        beta = self.loss_settings.g_ema_beta_at(global_batch, self.nimg)
        self.copy_to_gs(tf.cast(beta, tf.float32))

    def count_images(self, global_batch):
        """Ends an iteration (cross-replica): nimg += global_batch, after every phase has read
        it (all phases of an iteration see the same kimg and lod)."""
        self.nimg.assign_add(global_batch)

    def finish_step(self, global_batch):
        """Cross-replica part of an iteration: Gs EMA and the image counter."""
        self.update_gs(global_batch)
        self.count_images(global_batch)

    @property
    def kimg(self):
        return tf.cast(self.nimg, tf.float64) / 1000.0

    # -- networks as the phases use them -----------------------------------------------------

    def _stage_ratio(self, resolution):
        """s / R of the stage (1 without progressive growing): the penalties' gradient scale."""
        return losses.full_resolution_gradient_ratio(resolution, self.schedule.resolution)

    def _stage_args(self, lod, resolution):
        return dict(lod=lod, resolution=resolution) if self.progressive else {}

    def generate(self, z, labels, lod, resolution, mixing=True, perturbed=False, lanes=None):
        """G forward as in training: mapping, dlatent average, SQ, style mixing, random noise.

        Every call updates G's average of the continuous w from this batch's w (not the mixing
        w2), as both references do in every training G pass (Gmain, Greg, Dmain).

        Args:
          z, labels: latents (n, z_dim) and labels of this replica.
          mixing: style mixing with a second latent (with the preset's probability).
          perturbed: SQ-GAN consistency pair: also return x' = G(z + eps), eps ~ N(0,
            cr_sigma^2), drawn for this replica's rows of the global batch. x' shares x's
            style-mixing partner and cutoff and its noise inputs (the noise RNG is replayed),
            so x' - x comes from the latent perturbation alone, and x' = x when sigma = 0.
          lanes: a BatchLanes (style generators, perturbed False): the synthesis runs in its
            lanes (everything before it on the whole batch) and the images are the lanes'.

        Returns:
          (images float32 NHWC, or a list of each lane's rows; dlatents fed to the synthesis
          or None, SQ look-ups of w and of the mixing w2 (empty without SQ), x' or None).
        """
        if not self.is_style:
            return self.G(z, labels, **self._stage_args(lod, resolution)), None, [], None
        ws = self.G.mapping(z, labels)
        self.G.update_dlatent_avg(ws, self.loss_settings.dlatent_avg_beta)
        ws, lookups = self._quantize(ws, [])
        ws_p = None
        if perturbed:
            # fq_keras.perturb_latents draws per replica (every replica the same rows); here
            # each replica takes its rows of one global draw, so N replicas equal one device.
            eps = replica_random("normal", [tf.shape(z)[0], self.z_dim], self.seed_generator)
            z_p = z + tf.cast(self.sq_settings.cr_sigma, z.dtype) * tf.cast(eps, z.dtype)
            ws_p, _ = self._quantize(self.G.mapping(z_p, labels), [])
        if mixing and self.loss_settings.style_mixing_prob > 0:
            z2 = self._latents(tf.shape(z)[0])
            ws2, lookups = self._quantize(self.G.mapping(z2, labels), lookups)
            active = self.G.num_layers_at(resolution if self.progressive else None)
            prob = self.loss_settings.style_mixing_prob
            if ws_p is None:
                ws = self.G.mix_styles(ws, ws2, active, prob)
            else:
                # One cutoff for x and x': mix both halves of one batch in one call.
                both = self.G.mix_styles(tf.concat([ws, ws_p], 0), tf.concat([ws2, ws2], 0),
                                         active, prob)
                ws, ws_p = tf.split(both, 2, axis=0)
        if lanes is not None:
            images = [lanes.run(j, lambda j=j: self.synthesize(ws[j::lanes.count], lod,
                                                                  resolution))
                      for j in range(lanes.count)]
            return images, ws, lookups, None
        if ws_p is None:
            return self.synthesize(ws, lod, resolution), ws, lookups, None
        noise_rng = self.G.synthesis.seed_generator.state
        noise_state = tf.convert_to_tensor(noise_rng)
        images = self.synthesize(ws, lod, resolution)
        noise_rng.assign(noise_state)  # x' draws the noise x drew (and leaves the RNG as x did)
        return images, ws, lookups, self.synthesize(ws_p, lod, resolution)

    def _quantize(self, ws, lookups):
        """SQ of broadcast dlatents (n, num_ws, w_dim): quantises w = ws[:, 0] and broadcasts.

        Quantisation is per row, so this equals quantising every layer's copy (num_ws times
        cheaper). Returns (dlatents, lookups + [this look-up]); unchanged without SQ.
        """
        if not self.use_sq:
            return ws, lookups
        w_q, lookup = self.G.sq(ws[:, 0], return_lookup=True)
        return tf.tile(w_q[:, tf.newaxis], [1, self.G.num_ws, 1]), lookups + [lookup]

    def synthesize(self, ws, lod, resolution):
        return self.G.synthesis(ws, noise_mode="random", **self._stage_args(lod, resolution))

    def discriminate(self, images, labels, lod):
        """-> (logits (N, 1), auxiliary label logits or None, FQ lookups of active layers)."""
        lod_arg = {"lod": lod} if self.progressive else {}
        if self.auxiliary_labels:
            outputs = self.D(images, lod=lod_arg.get("lod"), return_fq=True,
                             return_label_logits=self.c_dim > 0)
            if self.c_dim > 0:
                return outputs
            return outputs[0], None, outputs[1]
        logits, lookups = self.D(images, labels if self.c_dim else None, return_fq=True, **lod_arg)
        return logits, None, lookups

    def _scale(self, optimizer, loss):
        return optimizer.scale_loss(loss) if self.loss_scaling else loss

    def _apply(self, optimizer, tape, loss, variables):
        grads = tape.gradient(loss, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])

    # -- one iteration ------------------------------------------------------------------------

    def train_step(self, data, resolution, global_batch, run_g_reg=False, run_d_reg=False):
        """One iteration on one replica's share of the batch (call inside `strategy.run`):
        the phases of `phases_of_iteration`, in order, with their logs merged.

        Args:
          data: (reals float32 NHWC in [-1, 1], labels float32 (n, c_dim)) per replica.
          resolution: static stage resolution (the reals' size).
          global_batch: Python int, images per iteration over all replicas.
          run_g_reg, run_d_reg: run the lazy path-length / R1 phases this iteration.

        Returns:
          (sums, means): dicts of float32 scalars; `sums` are per-replica shares of global
          means (reduce with SUM), `means` are identical on every replica (reduce with MEAN).
        """
        return self.run_phases(self.phases_of_iteration(run_g_reg, run_d_reg), data, resolution,
                               global_batch)

    def run_phases(self, phases, data, resolution, global_batch):
        """`run_phase` for each name in `phases`, in order, with their logs merged (arguments
        and results as in `train_step`)."""
        sums, means = {}, {}
        for phase in phases:
            phase_sums, phase_means = self.run_phase(phase, data, resolution, global_batch)
            sums.update(phase_sums)
            means.update(phase_means)
        return sums, means

    def phases_of_iteration(self, run_g_reg, run_d_reg):
        """The phases (names in PHASES) one iteration runs, in NVlabs' order."""
        settings = self.loss_settings
        return tuple(name for name, runs in (
            ("Gmain", True), ("Greg", run_g_reg and settings.lazy_pl), ("Dmain", True),
            ("Dreg", run_d_reg and settings.lazy_r1)) if runs)

    def run_phase(self, phase, data, resolution, global_batch):
        """One phase (a name in PHASES) on one replica's share of the batch: its loss, its
        optimizer step and its state updates. Arguments and results as in `train_step`.

        The training loop traces each phase once (not each combination of phases; see
        `loop.CompiledStep`), so the lazy regularisers cost one extra trace each, not one per
        iteration kind."""
        settings = self.loss_settings
        reals, labels = data
        reals = tf.cast(reals, tf.float32)
        labels = tf.cast(labels, tf.float32) if self.c_dim else None
        batch = tf.shape(reals)[0]
        inv_global = 1.0 / float(global_batch)
        kimg = self.kimg    # nimg moves in finish_step only: every phase sees the same lod
        lod = None
        if self.progressive:
            lod = tf.cast(self.schedule.lod_tensor(kimg), tf.float32)
            reals = fade_reals(reals, lod)
        fq_keras.set_quantized_forward(self.D.fq_layers, kimg, self.fq_settings.warmup_kimg)
        cadence = self.fq_settings.update_cadence
        sums, means = {}, {}

        with tf.name_scope(phase):   # op names carry the phase (profiles)
            if phase == "Gmain":
                z = self._latents(batch)
                with tf.GradientTape() as tape:
                    fakes, _, sq_lookups, _ = self.generate(z, labels, lod, resolution)
                    fake_logits, fake_label_logits, fake_fq = self.discriminate(fakes, labels,
                                                                                lod)
                    if settings.kind == "wgan_gp":
                        g_per_sample = losses.g_wgan(fake_logits)
                    else:
                        g_per_sample = losses.g_logistic_nonsaturating(fake_logits)
                    if fake_label_logits is not None:
                        g_per_sample += settings.cond_weight * self._label_loss(
                            fake_label_logits, labels)
                    g_gan = tf.reduce_sum(g_per_sample) * inv_global
                    alpha = self.fq_settings.alpha_at(kimg)
                    g_fq = fq_keras.fq_loss(fake_fq, global_batch, alpha)
                    g_loss = g_gan + g_fq
                    if self.use_sq:
                        g_sq = sq_generator_loss(self.G.sq, sq_lookups, global_batch,
                                                 self.sq_settings.weight,
                                                 self.sq_settings.uniformity)
                        g_loss = g_loss + g_sq
                    scaled = self._scale(self.g_optimizer, g_loss)
                self._apply(self.g_optimizer, tape, scaled, self.G.trainable_variables)
                fq_keras.update_after_phase("G", cadence, self.D.active_fq_layers(resolution),
                                            fake_fq)
                sums.update(g_loss=g_gan, g_fq_loss=g_fq)
                if self.use_sq:
                    # Usage of w's codes (not the mixing w2's), once per iteration, all-reduced.
                    self.G.sq.update_usage(sq_lookups[0]["indices"])
                    sums["g_sq_loss"] = g_sq

            elif phase == "Greg":
                # Path length on pl_batch = batch / shrink.
                pl_n = batch // settings.pl_batch_shrink
                z = self._latents(pl_n)
                pl_labels = None if labels is None else labels[:pl_n]
                with tf.GradientTape() as tape:
                    _, ws, _, _ = self.generate(z, pl_labels, lod, resolution)
                    lengths = losses.path_lengths(lambda w: self.synthesize(w, lod, resolution),
                                                  ws, self.seed_generator)
                    pl_mean = self._update_pl_mean(lengths)
                    penalty = tf.square(lengths - pl_mean)
                    pl_global = float(global_batch // settings.pl_batch_shrink)
                    g_reg = tf.reduce_sum(penalty) * (
                        settings.pl_weight * settings.pl_interval / pl_global)
                    scaled = self._scale(self.g_optimizer, g_reg)
                self._apply(self.g_optimizer, tape, scaled, self.G.trainable_variables)
                sums["g_pl_penalty"] = tf.reduce_sum(penalty) / pl_global
                means["pl_mean"] = pl_mean

            elif phase == "Dmain":
                fq_layers = self.D.active_fq_layers(resolution)
                with tf.GradientTape() as tape:
                    d_loss, terms, real_fq, fake_fq = self.discriminator_loss(
                        reals, labels, lod, resolution, global_batch)
                    scaled = self._scale(self.d_optimizer, d_loss)
                self._apply(self.d_optimizer, tape, scaled, self.D.trainable_variables)
                usage = fq_keras.update_after_phase("D", cadence, fq_layers, real_fq, fake_fq)
                sums.update(terms)
                for layer, stats in zip(fq_layers, usage):
                    means[f"fq/{layer.name}/perplexity"] = stats["perplexity"]
                    means[f"fq/{layer.name}/unused_fraction"] = stats["unused_fraction"]
                means["alpha_fq"] = self.fq_settings.alpha_at(kimg)
                if lod is not None:
                    means["lod"] = lod

            elif phase == "Dreg":
                # Lazy R1 on the reals of this iteration.
                with tf.GradientTape() as tape:
                    r1 = self._lazy_r1(reals, labels, lod, resolution)
                    d_reg = tf.reduce_sum(r1) * (
                        settings.r1_gamma * 0.5 * settings.r1_interval * inv_global)
                    scaled = self._scale(self.d_optimizer, d_reg)
                self._apply(self.d_optimizer, tape, scaled, self.D.trainable_variables)
                sums["d_r1_penalty"] = tf.reduce_sum(r1) * inv_global

            else:
                raise ValueError(f"unknown phase {phase!r}; one of {PHASES}.")
        return sums, means

    def discriminator_loss(self, reals, labels, lod, resolution, global_batch):
        """Dmain's loss (call inside the D tape): fresh fakes, D on reals and fakes, R1 or
        WGAN-GP when not lazy, FQ losses, and the SQ-GAN consistency term.

        The fakes (and x' of the consistency term) are generated here with stop_gradient:
        no part of this loss has a gradient with respect to G.

        Returns:
          (d_loss float32 scalar, {name: per-replica share of the logged terms}, FQ look-ups
          of the reals, FQ look-ups of the fakes). x' never enters the FQ losses or updates.
        """
        settings = self.loss_settings
        inv_global = 1.0 / float(global_batch)
        batch = tf.shape(reals)[0]
        sums = {}
        z = self._latents(batch)
        lanes = self._d_step_lanes(reals.shape[0])
        fakes, _, _, perturbed = self.generate(z, labels, lod, resolution,
                                               perturbed=self.use_sq_cr, lanes=lanes)
        fakes = tf.nest.map_structure(tf.stop_gradient, fakes)
        alpha = self.fq_settings.alpha_at(self.kimg)
        r1_in_main = settings.r1_gamma > 0 and not settings.lazy_r1
        if r1_in_main:
            r1, (real_logits, real_label_logits, real_fq) = losses.r1_penalty(
                lambda x: self.discriminate(x, labels, lod), reals, self._stage_ratio(resolution))
        else:
            real_logits, real_label_logits, real_fq = self.discriminate(reals, labels, lod)
        if lanes is None:
            fake_logits, fake_label_logits, fake_fq = self.discriminate(fakes, labels, lod)
        else:
            fake_logits, fake_label_logits, fake_fq = self._discriminate_lanes(
                lanes, fakes, labels, lod, resolution)
        if settings.kind == "wgan_gp":
            d_per_sample = losses.d_wgan(real_logits, fake_logits)
            gp = losses.wgan_gradient_penalty(
                lambda x: self.discriminate(x, labels, lod)[0], reals, fakes,
                self.seed_generator, settings.wgan_target, self._stage_ratio(resolution))
            d_per_sample += settings.wgan_lambda * gp
            d_per_sample += settings.wgan_epsilon * losses.wgan_epsilon_drift(real_logits)
            sums["d_gradient_penalty"] = tf.reduce_sum(gp) * inv_global
        else:
            d_per_sample = losses.d_logistic(real_logits, fake_logits)
        if real_label_logits is not None:
            d_per_sample += settings.cond_weight * (
                self._label_loss(real_label_logits, labels)
                + self._label_loss(fake_label_logits, labels))
        if r1_in_main:
            d_per_sample += r1 * (settings.r1_gamma * 0.5)
            sums["d_r1_penalty"] = tf.reduce_sum(r1) * inv_global
        d_gan = tf.reduce_sum(d_per_sample) * inv_global
        d_fq = (fq_keras.fq_loss(real_fq, global_batch, alpha)
                + fq_keras.fq_loss(fake_fq, global_batch, alpha))
        d_loss = d_gan + d_fq
        if perturbed is not None:
            perturbed_logits, _, _ = self.discriminate(tf.stop_gradient(perturbed), labels, lod)
            d_cr = tf.reduce_sum(sq_consistency_loss(
                fake_logits, perturbed_logits, self.sq_settings.cr_weight)) * inv_global
            d_loss = d_loss + d_cr
            sums["d_sq_cr_loss"] = d_cr
        sums.update(d_loss=d_gan, d_fq_loss=d_fq,
                    d_real_score=tf.reduce_sum(tf.cast(real_logits, tf.float32)) * inv_global,
                    d_fake_score=tf.reduce_sum(tf.cast(fake_logits, tf.float32)) * inv_global)
        return d_loss, sums, real_fq, fake_fq

    def _d_step_lanes(self, batch):
        """A BatchLanes of `self.lanes` for Dmain's fakes (and Dreg's reals) of a (static)
        per-replica `batch`, or None where lanes do not apply (see the `lanes` argument)."""
        if self.lanes < 2 or batch is None or not self.is_style or self.use_sq_cr \
                or self.loss_settings.kind == "wgan_gp" \
                or not lanes_keep_groups(batch, self.lanes, self.mbstd_group_sizes):
            return None
        return BatchLanes(self.lanes)

    def _lazy_r1(self, reals, labels, lod, resolution):
        """Dreg's per-sample R1 penalty (N,) of the reals, in the D step's lanes where they
        apply (`_d_step_lanes`): each lane's rows keep their minibatch-stddev groups whole, so
        every sample's gradient, and with it its penalty, is the whole batch's; the double
        back-propagation, one serial chain of small ops, then runs on two cores."""
        def r1_of(images, image_labels):
            return losses.r1_penalty(lambda x: self.discriminate(x, image_labels, lod)[0],
                                     images, self._stage_ratio(resolution))[0]

        lanes = self._d_step_lanes(reals.shape[0])
        if lanes is None:
            return r1_of(reals, labels)
        return lanes.merge([r1_of(part, part_labels) for part, part_labels
                            in zip(lanes.split(reals), lanes.split(labels))])

    def _discriminate_lanes(self, lanes, images, labels, lod, resolution):
        """`discriminate` of images computed in lanes (a list of each lane's rows): D runs
        per lane, and logits and FQ look-ups come back in batch order."""
        outputs = [self.discriminate(part, part_labels, lod)
                   for part, part_labels in zip(images, lanes.split(labels))]
        logits = lanes.merge([out[0] for out in outputs])
        label_logits = None if outputs[0][1] is None else lanes.merge([o[1] for o in outputs])
        lookups = [layer.merge_lookups([out[2][i] for out in outputs], lanes.merge)
                   for i, layer in enumerate(self.D.active_fq_layers(resolution))]
        return logits, label_logits, lookups

    def _latents(self, batch):
        """z for this replica's rows of the global batch (same numbers as one device)."""
        return replica_random("normal", [batch, self.z_dim], self.seed_generator)

    def _label_loss(self, label_logits, labels):
        """ProGAN's auxiliary classifier: softmax cross-entropy against the (one-hot) labels."""
        return tf.nn.softmax_cross_entropy_with_logits(labels=labels,
                                                       logits=tf.cast(label_logits, tf.float32))

    def _update_pl_mean(self, lengths):
        """pl_mean <- pl_mean + decay * (mean(L) - pl_mean), mean over the global pl batch.

        Returns the new pl_mean WITH its gradient path through mean(L), as both references
        penalise (L - pl_mean)^2 (the all-reduce passes the gradient on to every replica)."""
        batch_mean = tf.reduce_mean(lengths)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            batch_mean = context.all_reduce(tf.distribute.ReduceOp.MEAN, batch_mean)
        pl_mean = self.pl_mean + self.loss_settings.pl_decay * (batch_mean - self.pl_mean)
        self.pl_mean.assign(tf.stop_gradient(pl_mean))
        return pl_mean

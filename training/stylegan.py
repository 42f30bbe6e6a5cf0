"""Training options, presets and network construction for ProGAN / StyleGAN / StyleGAN2.

`TrainingOptions` is everything a run needs, flat and JSON-serialisable: `run_training.py` fills
it from flags, the loop writes it to `<run>/training_options.json`, and anything that later
rebuilds the run's networks (resume, export, generation, metrics) reads it back.
"""

import dataclasses
import math
import time

import numpy as np
import tensorflow as tf
from absl import app

import datasets
from fq_keras import codebook_init
from networks import progan, stylegan, stylegan2
from training import TrainingConfigError, distribute, loop
from training.checkpoints import Checkpoints, checkpoint_state, checkpoint_to_load
from training.logs import grid_upscale
from training.loop import CompiledStep, TrainingRun
from training.run_options import RunOptions, parse_index_flag
from training.schedule import ProgressiveSchedule
from training.trainer import LOSS_PRESETS, FQSettings, GANTrainer, SQSettings

MODELS = ("progan", "stylegan", "stylegan2")
FQ_PRESETS = ("official", "paper")

# The demos' length and snapshot cadence (the README's first command trains the StyleGAN2 demo,
# STYLEGAN2_DEMO_KIMG): a few minutes on a 2-core CPU, sample grids at DEMO_SNAPSHOT_TICKS x
# --tick-kimg 4 kimg intervals and at the end.
DEMO_KIMG = 28.0
STYLEGAN2_DEMO_KIMG = 40.0
DEMO_SNAPSHOT_TICKS = 2
# One GPU's per-resolution minibatch of ProGAN (progressive_growing_of_gans config.py,
# preset-v2-1gpu) and StyleGAN (stylegan train.py, FFHQ -1gpu): the same table in both.
PROGRESSIVE_MINIBATCH = ((4, 128), (8, 128), (16, 128), (32, 64), (64, 32), (128, 16), (256, 8),
                         (512, 4))

# --config presets per model (CONFIG_PRESETS[model][config]); PRESET_DEFAULTS fills in what a
# preset leaves out. Every model has "demo" (the default): sized for a CPU, small widths and a
# 2-layer mapping, so the default run finishes in minutes. The others are each family's official
# code (sources in the README's Training section):
#   stylegan2 e, f: the StyleGAN2 paper's config-e / config-f (NVlabs/stylegan2 run_training.py).
#   stylegan2 limited: stylegan2-ada-pytorch's `--cfg paper256`, the network its paper trains on
#     1k-5k image subsets (FFHQ, MetFaces, BreCaHAD at 256^2): half config-f's widths, batch 64,
#     lr 0.0025, gamma 1, a 20 kimg G_ema half-life and minibatch-stddev groups of 8.
#   stylegan ffhq: NVlabs/stylegan train.py's FFHQ config on one GPU (growing from 8^2).
#   progan celebahq: progressive_growing_of_gans config.py's CelebA-HQ preset-v2-1gpu (from 4^2).
# Fields: fmap_base / fmap_max / latent_dim / mapping_layers (mapping: StyleGAN and StyleGAN2
# only), batch (the minibatch where minibatch_dict has no entry), learning_rate (likewise, with
# learning_rate_dict), d_lr_multiplier (D's learning rate over G's; 1 = the official equal
# rates), r1_gamma (logistic losses only), Gs EMA: g_ema_kimg (half-life),
# g_ema_rampup (stylegan2-ada's ramp-up, 0 = off) or g_ema_beta (> 0: a fixed per-step beta,
# ProGAN's G_smoothing), mbstd_group (D's minibatch-stddev group), initial_resolution (of
# progressive growing), kimg (the run's length), pl_weight / style_mixing_prob (None = the model's
# LOSS_PRESETS value), fq_blocks (None = the model's official FQ blocks, FQ_DEFAULTS; --fq-blocks
# overrides either), conditional_if_labelled (condition G and D on the labels when the dataset
# has them; otherwise, as in the official code, only with --conditional).
PRESET_DEFAULTS = dict(g_ema_kimg=10.0, g_ema_rampup=0.0, g_ema_beta=0.0, mbstd_group=4,
                       initial_resolution=8, minibatch_dict=(), learning_rate_dict=(),
                       kimg=25000.0, pl_weight=None, style_mixing_prob=None, fq_blocks=None,
                       conditional_if_labelled=False, d_lr_multiplier=1.0)
# The StyleGAN2 demo is tuned for image quality per FLOP on a CPU, the way stylegan2-ada-pytorch's
# small `--cfg cifar` is (2-layer mapping, no path-length regularisation, no style mixing: both
# pay off only late in long runs), with a higher learning rate for its small widths (the
# progressive models' demos keep 0.002). SWD x1e3 (256 images) on the built-in shapes, Intel
# Xeon, 2026-12-03:
#   1 thread, seed 0, kimg 0 -> 24: lr 0.002 with path length and mixing 138 -> 84..110 over
#   runs; without them 78; lr 0.004 62 (0.003: 76, 0.006: 71; gamma 1: 71, 0.1: 86; Gs ramp-up
#   0.15 / 0.3 instead of 0.05: 64 / 70). Other seeds at lr 0.004, kimg 24 / 32: 76 of 156 /
#   -, 62 / 58 of 136, 78 / 82 of 131 (seed 3; batch 32: 104 / 85, gamma 0.2: 75 / 83).
#   2 threads (the default run), seed 0: 138 -> 95 / 95 / 69 / 59 / 54 at kimg 8 / 16 / 24 / 28
#   / 32, hence 28 kimg (181 s of training, 3.5 minutes in all). Without the path-length phase an
#   iteration costs ~12% less. 2026-12-04, FQ on block 16 only (below): 138 -> 88 / 73 / 76 / 63
#   at kimg 8 / 16 / 24 / 28 (180 s). Longer (1 thread, FQ 16,32): 75 / 57 / 46 / 35 / 40 / 42
#   at kimg 16 / 32 / 48 / 64 / 80 / 96; the grids show round colour blobs (red discs and blue
#   rings recognisable) up to ~48 kimg, the five classes' colours with polygonal outlines
#   (squares, crosses starting) from ~64 kimg.
# 2026-12-04, class-conditional (below) with one thread per op (run_training.py), which made an
# iteration ~15% cheaper and leaves room for 40 kimg in the old time: seed 0, 1 thread, kimg 8 /
# 16 / 24 / 32 / 40 (of 146 at kimg 0): lr 0.004 batch 16: 101 / 61 / 47 / 44 / 46; lr 0.003: 115
# / 48 / 42 / 53 / 40; lr 0.003 gamma 0.2: 105 / 50 / 39 / 45 / 41; lr 0.003 batch 8: 101 / 45
# / 39 / 39 / 41; lr 0.002 batch 8: 77 / 52 / 45 / 37 / 44; lr 0.002 batch 4: 78 / 47 / 41 / 40
# / 33. SWD hardly separates them, the grids do: with batch 16 every class is a round blob
# (discs and rings right, squares, triangles and crosses not) at 40 kimg; with batch 8 or 4
# (twice / four times the steps for the same images) the crosses have four arms, the triangles
# corners starting, the background its weave. Batch 8 costs ~3% img/s on 2 cores (213 vs 219),
# batch 4 ~25% (166), hence batch 8, lr 0.003, 40 kimg. fmap_max 128 or fmap_base 1024: 35-40%
# slower for no clear gain per kimg (SWD 40 / 55 at 24 kimg vs 47).
# 2026-12-04 (session 11), judged by a hue-free shape check: a small CNN trained on the
# (saturation, value) maps of real shapes (100% on held-out reals) classifies 200 Gs samples per
# class; the fraction given the class's own kind is that class's shape accuracy (a blob of any
# colour reads as a circle). 1 thread, seed 0, 40 kimg, circle / square / triangle / ring / cross:
# the batch-8 preset above 1.00 / 0.06 / 0.09 / 1.00 / 0.88; squares and triangles stay rounded
# blobs however long: 0.10 / 0.56 at 80 kimg, while G itself (not Gs) reaches 0.78 / 0.67 there
# and 0.07 / 0.73 at 40 kimg. No gain at 40 kimg from lazy R1 every 4 (squares 0.05), gamma 0.1
# (0.04) or 2, G architecture orig, G twice as wide (0.06), FQ at 16,32 (0.01), FQ off (0.04,
# crosses 0.35), batch 4, or the mapping's lr multiplier 0.1; D twice as wide: 0.16 (0.34 with
# the short Gs ramp-up below) but 30% slower. What helps at no cost is D learning at twice G's
# rate (d_lr_multiplier 2, a two-time-scale update in the sense of Heusel et al. 2017) with the
# Gs ramp-up at 0.01 (a half-life of 0.4 kimg at 40 kimg rather than 2, so Gs follows a G that
# still changes fast): seed 0 0.96 / 0.38 / 0.70 / 1.00 / 0.96 (mean 0.80 vs 0.61), seed 1 0.97
# / 0.28 / 0.20 / 1.00 / 0.94 (0.68 vs 0.55 for the preset above). The ramp-up alone: 0.63. SWD
# at 40 kimg is higher with it (53 vs 41 of 146, 41 vs 32 of 143): it weighs the background
# texture, which the shorter Gs average renders noisier. D at three times G's rate (kept): seed 0
# 0.96 / 0.82 / 0.84 / 1.00 / 0.96 (mean 0.92), seed 1 0.98 / 0.53 / 0.44 / 0.98 / 0.96 (0.78),
# SWD 33.5 of 146 and 33.9 of 143. By eye the squares are four-cornered blobs and the triangles
# green blobs with a point or two at 40 kimg; both are drawn clearly from ~56 kimg (80 kimg, seed
# 0: 0.96 / 1.00 / 0.98 / 0.96 / 1.00).
# 2026-12-04 (session 12), the same check, seeds 0 / 1 / 2, mean of the five classes at 40 kimg
# (SWD of ~143): the preset above 0.92 / 0.78 / 0.85 (SWD 33.5 / 33.9 / 37.1); D at four times
# G's rate 0.85 / 0.86 (49 / 45); gamma 0.2 0.90 / 0.84; batch 4 for 30 kimg (equal time) 0.79 /
# 0.84; lr 0.004 with D at 0.012 (kept) 0.89 / 0.89 / 0.89 (SWD 48.6 / 35.8 / 35.2), ahead in
# longer runs as well: 0.92 / 0.93 at 48 kimg (the preset above 0.85 / 0.81), 0.95 / 0.95 at
# 56 (0.93 / 0.87), squares 0.82 / 0.83 and triangles 0.95 / 0.97 there; by eye all five
# outlines are drawn at 56 kimg on seeds 0 and 1, while seed 2's squares are still irregular
# quadrilaterals (0.92 at 48 and 56 kimg; seed 3 at 40 kimg 0.86).
DEMO = dict(fmap_base=512, fmap_max=64, latent_dim=64, mapping_layers=2, batch=16,
            learning_rate=0.002, r1_gamma=0.5, g_ema_kimg=10.0, g_ema_rampup=0.05, kimg=DEMO_KIMG)
# Its FQ is one layer, after block 8 (D's 4x4 features, K 128): the FQ-GAN paper's "Blocks-8"
# for StyleGAN at 32^2-128^2, which its official code (FQ-StyleGAN v1, `res == 3`) places on the
# output of D's 8x8 block, and FQ-StyleGAN2's `--discrete_layer 3` with its K for that block;
# config-e's 16,32 is for 1024^2. At demo widths (16-64 channels) a look-up's (N, K) products,
# arg-min and sums weigh against convolutions of a few channels, and block 8 has a quarter of
# block 16's rows: bench/bench_training.py, FQ on / off step time, Intel Xeon 2 cores,
# 2026-12-04: +4.7..+6.1% (16,32), +0.5..+1.1% (16, single copies); AMD EPYC 2 cores,
# 2026-12-05, 16 copies: +1.1% (16), see the README's bench row for block 8. The default run
# (2 threads, seed 0, AMD EPYC) logs SWD 146.0 -> 71.0 / 58.4 / 52.4 / 55.6 / 46.4 at kimg 8 /
# 16 / 24 / 32 / 40 with block 8 against 66.4 / 52.7 / 42.9 / 59.5 / 50.9 with block 16; by eye
# the same five classes at 40 kimg (red discs, yellow quadrilaterals, green triangles, blue
# rings, magenta crosses). Earlier (1 thread, seed 0, 28 kimg): block 16 57, 16,32 54.
# It is class-conditional on labelled data (the built-in shapes),
# as `--cfg cifar` is: the class input takes over the colour and kind of each sample, which the
# unconditional model must find first (SWD at 28 kimg 0.30x the initial vs 0.41-0.46x).
STYLEGAN2_DEMO = dict(DEMO, batch=8, learning_rate=0.004, d_lr_multiplier=3.0, g_ema_rampup=0.01,
                      pl_weight=0.0, style_mixing_prob=0.0, fq_blocks=(8,),
                      conditional_if_labelled=True, kimg=STYLEGAN2_DEMO_KIMG)
CONFIG_PRESETS = {
    "stylegan2": {
        "demo": STYLEGAN2_DEMO,
        "e": dict(fmap_base=8192, fmap_max=512, latent_dim=512, mapping_layers=8, batch=32,
                  learning_rate=0.002, r1_gamma=100.0, g_ema_kimg=10.0),
        "f": dict(fmap_base=16384, fmap_max=512, latent_dim=512, mapping_layers=8, batch=32,
                  learning_rate=0.002, r1_gamma=10.0, g_ema_kimg=10.0),
        "limited": dict(fmap_base=8192, fmap_max=512, latent_dim=512, mapping_layers=8, batch=64,
                        learning_rate=0.0025, r1_gamma=1.0, g_ema_kimg=20.0, mbstd_group=8),
    },
    "stylegan": {
        "demo": DEMO,
        "ffhq": dict(fmap_base=8192, fmap_max=512, latent_dim=512, mapping_layers=8, batch=4,
                     minibatch_dict=PROGRESSIVE_MINIBATCH, learning_rate=0.001,
                     learning_rate_dict=((128, 0.0015), (256, 0.002), (512, 0.003),
                                         (1024, 0.003)),
                     r1_gamma=10.0, g_ema_kimg=10.0, initial_resolution=8),
    },
    "progan": {
        "demo": DEMO,
        "celebahq": dict(fmap_base=8192, fmap_max=512, latent_dim=512, batch=4,
                         minibatch_dict=PROGRESSIVE_MINIBATCH, learning_rate=0.001,
                         learning_rate_dict=((1024, 0.0015),), g_ema_beta=0.999,
                         initial_resolution=4, kimg=12000.0),
    },
}


def discriminator_blocks(resolution):
    """The blocks of a StyleGAN-family D at `resolution`, by input resolution, high to low (the
    ones FQ may follow; the 4x4 epilogue is not one): 32 -> [32, 16, 8]."""
    return [2 ** r for r in range(resolution.bit_length() - 1, 2, -1)]


def config_preset(model, config):
    """The --config preset of a model, every field filled in (ValueError naming the model's
    presets if it has no such preset)."""
    if config not in CONFIG_PRESETS[model]:
        owners = [m for m in MODELS if config in CONFIG_PRESETS[m]]
        known = f" is a {' / '.join(owners)} preset;" if owners else ":"
        raise ValueError(f"--config {config!r}{known} {model} presets are "
                         f"{', '.join(CONFIG_PRESETS[model])}.")
    return {**PRESET_DEFAULTS, **CONFIG_PRESETS[model][config]}


# Official FQ settings per model (fq-official.md); ProGAN has no official FQ: StyleGAN v1's.
FQ_DEFAULTS = {"progan": progan.FQ_DEFAULTS, "stylegan": stylegan.FQ_DEFAULTS,
               "stylegan2": stylegan2.FQ_DEFAULTS}


@dataclasses.dataclass
class TrainingOptions(RunOptions):
    """One training run. Defaults: FQ-StyleGAN2, demo widths, the built-in synthetic data."""
    MODELS = ("progan", "stylegan", "stylegan2")
    FAMILY = "StyleGAN"

    model: str = "stylegan2"
    config: str = "demo"
    dataset: str = "shapes"            # Dataset folder or built-in synthetic name.
    resolution: int = 0                # 0 = the dataset's resolution (32 for built-in data).
    channels: int = 0                  # Image channels; filled in from the dataset.
    label_size: int = 0                # Label length used (0 = unconditional); filled in.
    conditional: bool = None           # Use the dataset's labels; None = conditional_on().
    kimg: float = 30.0
    batch: int = 0                     # 0 = preset.
    learning_rate: float = 0.0         # 0 = preset.
    r1_gamma: float = -1.0             # < 0 = preset (config-e 100, config-f 10).
    mirror: bool = False
    # Progressive growing (always on for ProGAN / StyleGAN; an option for StyleGAN2).
    progressive: bool = False
    initial_resolution: int = 0        # 0 = preset (ProGAN celebahq 4, otherwise 8).
    stabilize_kimg: float = 600.0
    transition_kimg: float = 600.0
    # Feature quantization.
    fq_blocks: tuple = None            # Block resolutions; None = the default (fq_blocks_at).
    fq_preset: str = "official"
    fq_num_embeddings: int = 0         # 0 = model default.
    fq_decay: float = 0.0              # 0 = model default.
    fq_commitment: float = -1.0        # < 0 = model default.
    fq_alpha: float = 1.0
    fq_warmup_kimg: float = 0.0        # Paper preset: alpha ramps from 0 over this many kimg.
    fq_update_cadence: str = "step"    # fq_keras.UPDATE_CADENCES.
    # SQ-GAN style quantization in the StyleGAN2 generator (fq_keras.style_quantization).
    sq: bool = False
    sq_dim: int = 4                    # Sub-vector (code) length; must divide w_dim.
    sq_codebook: int = 1024            # Codebook entries K.
    sq_hyperspherical: bool = True     # Unit-sphere codes (paper).
    sq_beta: float = 0.25              # Commitment cost.
    sq_weight: float = 0.01            # G: weight * (L_sq + L_uf).
    sq_uniformity: bool = True         # Include L_uf.
    sq_uniformity_t: float = 2.0       # Temperature t of L_uf.
    sq_cr_weight: float = 0.01         # D: weight * L_qcr; 0 = no consistency term.
    sq_cr_sigma: float = 0.1           # Latent perturbation std of L_qcr.
    sq_cbi_features: str = ""          # .npy image features for codebook initialisation ("" = off).
    sq_cbi_steps: int = 500
    sq_cbi_lr: float = 1e-3
    sq_cbi_epsilon: float = 0.05
    sq_cbi_batch: int = 0              # Images per CBI step; 0 = all.
    num_images: int = 0                # Use only this many training images (0 = all).

    def __post_init__(self):
        # Also catches a run folder written before the presets were per model (a StyleGAN or
        # ProGAN run of --config e / f): its networks cannot be rebuilt from today's presets.
        config_preset(self.model, self.config)

    # -- derived -----------------------------------------------------------------------------

    def preset(self, name):
        return config_preset(self.model, self.config)[name]

    @property
    def minibatch(self):
        return self.batch or self.preset("batch")

    def fq_blocks_at(self, resolution=0):
        """The FQ blocks: `fq_blocks` as given (--fq-blocks), else the preset's, else the model's
        official ones, those of them a discriminator at `resolution` (default the options'; 0 =
        unknown: all) has."""
        if self.fq_blocks is not None:
            return tuple(self.fq_blocks)
        blocks = self.preset("fq_blocks")
        blocks = FQ_DEFAULTS[self.model]["fq_blocks"] if blocks is None else blocks
        resolution = resolution or self.resolution
        if resolution:
            blocks = [b for b in blocks if b in discriminator_blocks(resolution)]
        return tuple(blocks)

    def conditional_on(self, has_labels):
        """Whether G and D take the dataset's labels: `conditional` as given (--conditional /
        --noconditional), else the preset's rule (the StyleGAN2 demo: when the data has them)."""
        if self.conditional is not None:
            return bool(self.conditional)
        return bool(has_labels and self.preset("conditional_if_labelled"))

    @property
    def lr(self):
        return self.learning_rate or self.preset("learning_rate")

    @property
    def is_progressive(self):
        return self.model != "stylegan2" or self.progressive

    @property
    def first_resolution(self):
        """The resolution training starts at: the dataset's without progressive growing."""
        if not self.is_progressive:
            return self.resolution
        return self.initial_resolution or self.preset("initial_resolution")

    def schedule(self):
        # The preset's per-resolution minibatch and learning rate, unless --batch / --lr fix them.
        return ProgressiveSchedule(
            resolution=self.resolution,
            initial_resolution=min(self.first_resolution, self.resolution),
            stabilize_kimg=self.stabilize_kimg, transition_kimg=self.transition_kimg,
            minibatch_base=self.minibatch,
            minibatch_dict=() if self.batch else self.preset("minibatch_dict"),
            learning_rate_base=self.lr,
            learning_rate_dict=() if self.learning_rate else self.preset("learning_rate_dict"))

    def loss_settings(self):
        loss = dataclasses.replace(LOSS_PRESETS[self.model],
                                   g_ema_kimg=self.preset("g_ema_kimg"),
                                   g_ema_rampup=self.preset("g_ema_rampup"),
                                   g_ema_beta=self.preset("g_ema_beta"))
        if loss.r1_gamma > 0:
            gamma = self.r1_gamma if self.r1_gamma >= 0 else self.preset("r1_gamma")
            loss = dataclasses.replace(loss, r1_gamma=gamma)
        overrides = {name: self.preset(name) for name in ("pl_weight", "style_mixing_prob")
                     if self.preset(name) is not None}
        return dataclasses.replace(loss, **overrides)

    def fq_settings(self):
        return FQSettings(alpha=self.fq_alpha, warmup_kimg=self.fq_warmup_kimg_resolved(),
                          update_cadence=self.fq_update_cadence)

    def sq_settings(self):
        return SQSettings(weight=self.sq_weight, uniformity=self.sq_uniformity,
                          cr_weight=self.sq_cr_weight, cr_sigma=self.sq_cr_sigma)

    def sq_layer_kwargs(self):
        """The generator's style-quantization arguments ({} when --sq is off)."""
        if not self.sq:
            return {}
        return dict(sq_num_codes=self.sq_codebook, sq_code_dim=self.sq_dim,
                    sq_hyperspherical=self.sq_hyperspherical, sq_commitment_cost=self.sq_beta,
                    sq_uniformity_temperature=self.sq_uniformity_t)

    def fq_layer_kwargs(self):
        defaults = FQ_DEFAULTS[self.model]
        return dict(
            fq_blocks=self.fq_blocks_at(),
            fq_num_embeddings=self.fq_num_embeddings or defaults["fq_num_embeddings"],
            fq_decay=self.fq_decay or defaults["fq_decay"],
            fq_commitment_cost=(self.fq_commitment if self.fq_commitment >= 0
                                else defaults["fq_commitment_cost"]),
            fq_forward="quantized" if self.fq_preset == "paper" else "continuous")



def build_trainer(options, G, D, schedule=None):
    """The GANTrainer the options train G and D with (losses, FQ / SQ settings, learning rates
    with the preset's D multiplier, precision, seed); `schedule` defaults to
    `options.schedule()`. Call inside `strategy.scope()`."""
    return GANTrainer(G, D, options.loss_settings(), schedule or options.schedule(),
                      options.fq_settings(), learning_rate=options.lr,
                      loss_scaling=options.loss_scaling, seed=options.seed,
                      sq=options.sq_settings(),
                      d_lr_multiplier=options.preset("d_lr_multiplier"),
                      lanes=distribute.batch_lanes())


def build_networks(options, channels, c_dim):
    """(G, D) for the options; call inside `strategy.scope()`.

    Args:
      options: TrainingOptions with `resolution` resolved.
      channels: image channels of the dataset.
      c_dim: label size (0 = unconditional).
    """
    widths = dict(fmap_base=options.preset("fmap_base"), fmap_max=options.preset("fmap_max"))
    latent = options.preset("latent_dim")
    fq = options.fq_layer_kwargs()
    res = options.resolution
    seed = options.seed
    if options.model == "stylegan2":
        G = stylegan2.Generator(z_dim=latent, c_dim=c_dim, w_dim=latent, resolution=res,
                                img_channels=channels, mapping_layers=options.preset("mapping_layers"),
                                progressive=options.progressive,
                                architecture="skip", seed=seed, **widths,
                                **options.sq_layer_kwargs(), name="G")
        D = stylegan2.Discriminator(resolution=res, img_channels=channels, c_dim=c_dim,
                                    architecture="skip" if options.progressive else "resnet",
                                    progressive=options.progressive,
                                    mbstd_group_size=options.preset("mbstd_group"), **widths, **fq,
                                    name="D")
    elif options.model == "stylegan":
        G = stylegan.Generator(z_dim=latent, c_dim=c_dim, w_dim=latent, resolution=res,
                               img_channels=channels, mapping_layers=options.preset("mapping_layers"),
                               mapping_fmaps=latent, seed=seed, **widths, name="G")
        D = stylegan.Discriminator(resolution=res, img_channels=channels, c_dim=c_dim, **widths,
                                   **fq, name="D")
    elif options.model == "progan":
        G = progan.Generator(resolution=res, img_channels=channels, c_dim=c_dim,
                             latent_size=latent, **widths, name="G")
        D = progan.Discriminator(resolution=res, img_channels=channels, c_dim=c_dim, **widths,
                                 **fq, name="D")
    else:
        raise ValueError(f"Unknown model {options.model!r}; choose one of {', '.join(MODELS)}.")
    return G, D


#----------------------------------------------------------------------------
# run_training.py's interface to this family (see run_training.FAMILIES).

Options = TrainingOptions


def options_from_flags(fv):
    """TrainingOptions from parsed flags; raises app.UsageError on impossible settings."""
    try:
        preset = config_preset(fv.model, fv.config)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    # None = the model's official blocks, resolved against the resolution later.
    fq_blocks = parse_index_flag("fq-blocks", fv["fq-blocks"].value, "resolutions like 16,32")
    metrics = tuple(m for m in fv.metrics if m != "none")
    if set(metrics) - {"swd"}:
        raise app.UsageError(f"--metrics: unknown {sorted(set(metrics) - {'swd'})}; during "
                             "training only swd is available (run_metrics.py does the rest).")
    kimg = fv.kimg if fv.kimg is not None else preset["kimg"]
    # The demo snapshots every DEMO_SNAPSHOT_TICKS ticks, so a short run shows its progress in
    # several sample grids; other configs keep the flag's default (NVlabs-style long runs).
    snapshot_ticks = fv["snapshot-ticks"].value
    if fv.config == "demo" and not fv["snapshot-ticks"].present:
        snapshot_ticks = DEMO_SNAPSHOT_TICKS
    if kimg <= 0 or fv["tick-kimg"].value <= 0 or snapshot_ticks < 1:
        raise app.UsageError("--kimg and --tick-kimg must be > 0 and --snapshot-ticks >= 1.")
    if fv.batch < 0:
        raise app.UsageError("--batch must be positive.")
    if fv.xla and fv.strategy != "default":
        raise app.UsageError("--xla works with --strategy default only (tf.distribute does not "
                             "compile its collectives with XLA here).")
    if fv["num-images"].value < 0:
        raise app.UsageError("--num-images must be >= 0 (0 = the whole dataset).")
    sq = _sq_options_from_flags(fv)
    return TrainingOptions(
        model=fv.model, config=fv.config, dataset=fv.dataset, resolution=fv.resolution,
        conditional=fv.conditional, kimg=kimg, batch=fv.batch, learning_rate=fv.lr,
        r1_gamma=fv.gamma, mirror=fv.mirror, progressive=fv.progressive,
        initial_resolution=fv["initial-resolution"].value,
        stabilize_kimg=fv["stabilize-kimg"].value, transition_kimg=fv["transition-kimg"].value,
        fq_blocks=fq_blocks, fq_preset=fv["fq-preset"].value,
        fq_num_embeddings=fv["fq-num-embeddings"].value, fq_decay=fv["fq-decay"].value,
        fq_commitment=fv["fq-commitment"].value, fq_alpha=fv["fq-alpha"].value,
        fq_warmup_kimg=fv["fq-warmup-kimg"].value,
        fq_update_cadence=fv["fq-update-cadence"].value, seed=fv.seed, strategy=fv.strategy,
        devices=tuple(fv.devices), precision=fv.precision, xla=fv.xla,
        tick_kimg=fv["tick-kimg"].value, snapshot_ticks=snapshot_ticks,
        metrics=metrics, num_images=fv["num-images"].value, **sq)


def _sq_options_from_flags(fv):
    """The --sq-* flags as TrainingOptions fields; bad values are one-line usage errors."""
    values = dict(
        sq=fv.sq, sq_dim=fv["sq-dim"].value, sq_codebook=fv["sq-codebook"].value,
        sq_hyperspherical=fv["sq-hyperspherical"].value, sq_beta=fv["sq-beta"].value,
        sq_weight=fv["sq-weight"].value, sq_uniformity=fv["sq-uniformity"].value,
        sq_uniformity_t=fv["sq-uniformity-t"].value, sq_cr_weight=fv["sq-cr-weight"].value,
        sq_cr_sigma=fv["sq-cr-sigma"].value, sq_cbi_features=fv["sq-cbi-features"].value,
        sq_cbi_steps=fv["sq-cbi-steps"].value, sq_cbi_lr=fv["sq-cbi-lr"].value,
        sq_cbi_epsilon=fv["sq-cbi-epsilon"].value, sq_cbi_batch=fv["sq-cbi-batch"].value)
    changed = sorted(f"--{fv[n].name}" for n in fv if n.startswith("sq-") and fv[n].present)
    if not fv.sq:
        if changed:
            raise app.UsageError(f"{', '.join(changed)} given without --sq; add --sq to train "
                                 "with style quantization.")
        return values
    if fv.model != "stylegan2":
        raise app.UsageError(f"--sq: style quantization is implemented for --model stylegan2, "
                             f"not {fv.model}.")
    checks = [
        (values["sq_dim"] >= 1, "--sq-dim must be >= 1"),
        (values["sq_codebook"] >= 2, "--sq-codebook must be >= 2"),
        (values["sq_beta"] >= 0, "--sq-beta must be >= 0"),
        (values["sq_weight"] >= 0, "--sq-weight must be >= 0"),
        (values["sq_uniformity_t"] > 0, "--sq-uniformity-t must be > 0"),
        (values["sq_cr_weight"] >= 0, "--sq-cr-weight must be >= 0 (0 = no consistency term)"),
        (values["sq_cr_sigma"] >= 0, "--sq-cr-sigma must be >= 0"),
        (values["sq_cbi_steps"] >= 1, "--sq-cbi-steps must be >= 1"),
        (values["sq_cbi_lr"] > 0, "--sq-cbi-lr must be > 0"),
        (values["sq_cbi_epsilon"] > 0, "--sq-cbi-epsilon must be > 0"),
        (values["sq_cbi_batch"] == 0 or values["sq_cbi_batch"] >= 2,
         "--sq-cbi-batch must be 0 (all images) or >= 2"),
    ]
    for ok, message in checks:
        if not ok:
            raise app.UsageError(message + ".")
    return values



def validate(options):
    """Checks what can be checked before TensorFlow builds anything (one clear message each)."""
    resolution = options.resolution
    if resolution and (resolution < 4 or resolution & (resolution - 1)):
        raise app.UsageError(f"--resolution {resolution}: must be a power of two >= 4 "
                             "(a level of the dataset), or 0 for the dataset's own.")
    try:
        dataset = datasets.open_dataset(options.dataset, resolution=options.resolution or None,
                                        num_images=options.num_images or None)
    except datasets.DatasetError as e:
        raise app.UsageError(f"--dataset: {e}") from None
    info = dataset.info
    resolution = options.resolution or info.resolution
    if options.conditional and not info.has_labels:
        raise app.UsageError(f"--conditional: {info.source} has no labels.")
    options.conditional = options.conditional_on(info.has_labels)
    if options.is_progressive and options.initial_resolution > resolution:
        raise app.UsageError(f"--initial-resolution {options.initial_resolution} is above the "
                             f"training resolution {resolution}.")
    valid_blocks = discriminator_blocks(resolution)
    options.fq_blocks = options.fq_blocks_at(resolution)
    wrong = [b for b in options.fq_blocks if b not in valid_blocks]
    if wrong:
        raise app.UsageError(f"--fq-blocks {','.join(map(str, wrong))}: not a discriminator block "
                             f"at resolution {resolution}; valid blocks: "
                             f"{','.join(map(str, valid_blocks))} (or \"\" for no FQ).")
    batch, group = options.minibatch, options.preset("mbstd_group")
    if batch % group:
        raise app.UsageError(f"--batch {batch}: must be a multiple of the minibatch-stddev group "
                             f"size {group} (per replica).")
    if options.sq:
        _validate_sq(options)


def _validate_sq(options):
    w_dim = options.preset("latent_dim")
    if w_dim % options.sq_dim:
        divisors = [d for d in (2, 4, 8, 16) if w_dim % d == 0]
        raise app.UsageError(
            f"--sq-dim {options.sq_dim} does not divide w_dim {w_dim} (--config "
            f"{options.config}); choose one of {','.join(map(str, divisors))} (SQ-GAN: 4).")
    if options.sq_cbi_features:
        try:
            codebook_init.load_image_features(options.sq_cbi_features)
        except (OSError, ValueError) as e:
            raise app.UsageError(f"--sq-cbi-features: {e}") from None




def load_networks(run_dir, checkpoint=None, which=("Gs",)):
    """Rebuilds a run's networks and loads them from its checkpoint (latest by default).

    Args:
      run_dir: a folder written by run_training.py (training_options.json + checkpoints/).
      checkpoint: a checkpoint path (run_dir/checkpoints/ckpt-N); None = the latest.
      which: names among "G", "Gs", "D".

    Returns:
      (options, {name: network}); Gs is the generator to sample from (EMA of G).
    """
    options = TrainingOptions.load(run_dir)
    checkpoint = checkpoint_to_load(run_dir, checkpoint)
    G, D = build_networks(options, options.channels, options.label_size)
    networks = {"G": G, "D": D}
    if "Gs" in which:
        networks["Gs"] = type(G).from_config({**G.get_config(), "name": "Gs"})
    networks = {name: networks[name] for name in which}
    state = checkpoint_state(**networks)
    Checkpoints(state, run_dir).checkpoint.read(checkpoint).expect_partial().assert_existing_objects_matched()
    return options, networks


#----------------------------------------------------------------------------
# The family's training run (training/loop.py drives it).


class StyleGANRun(TrainingRun):
    """ProGAN / StyleGAN / StyleGAN2 for `training.loop.training_loop`.

    Position = images shown (nimg). Time is divided into schedule segments (constant
    resolution, minibatch and learning rate; training/schedule.py); each segment opens its own
    distributed input pipeline (a pure function of the seed and the segment's images consumed)
    and its own CompiledStep, whose phases (G main, D main and the lazy regularisers of the
    iteration) are traced on first use.
    """

    progress_keys = ("g_loss", "d_loss", "d_fq_loss", "lod")

    def open_data(self):
        options = self.options
        self.dataset = datasets.open_dataset(options.dataset, resolution=options.resolution or None,
                                             num_images=options.num_images or None)
        info = self.dataset.info
        if options.conditional and not info.has_labels:
            raise TrainingConfigError(f"--conditional: dataset {info.source} has no labels; "
                                      "prepare it with --labels or drop --conditional.")
        # What the dataset decides, recorded so that the run can be rebuilt without it later
        # (the FQ blocks and conditioning too: a resumed run keeps them even if the preset's
        # default changes).
        resolution = options.resolution or info.resolution
        conditional = options.conditional_on(info.has_labels)
        self.options = options = dataclasses.replace(
            options, resolution=resolution, channels=info.channels, conditional=conditional,
            label_size=info.label_size if conditional else 0,
            fq_blocks=options.fq_blocks_at(resolution))
        self.schedule = options.schedule()
        self.segment = self.compiled = self.iterator = None

    def data_summary(self):
        # A conditional run names its classes in the start record ("Data: ..., 5 classes").
        summary = super().data_summary()
        if self.options.label_size:
            summary["classes"] = self.options.label_size
        return summary

    def check_replicas(self, replicas):
        # Every segment the run reaches (the minibatch changes with the resolution).
        start = 0.0
        while start < self.options.kimg:
            segment = self.schedule.segment_at(start)
            check_batch(segment.minibatch, replicas, self.options.preset("mbstd_group"))
            start = segment.end_kimg

    def build_trainer(self):
        options = self.options
        G, D = build_networks(options, options.channels, options.label_size)
        return build_trainer(options, G, D, self.schedule)

    def start_new_run(self, logger):
        if self.trainer.use_sq and self.options.sq_cbi_features:
            logger.scalars(0.0, initialize_sq_codebook(self.options, self.trainer, self.log,
                                                       self.dataset.info.num_images))

    # -- progress ------------------------------------------------------------------------------

    def position(self):
        return int(self.trainer.nimg.numpy())

    def total(self):
        return int(round(self.options.kimg * 1000))

    def tick_values(self, position):
        values = {"progress/resolution": self.segment.resolution,
                  "progress/learning_rate": self.segment.learning_rate}
        values.update(sq_tick_statistics(self.trainer))
        return values

    # -- steps ---------------------------------------------------------------------------------

    def step(self, nimg, max_images):
        segment = self.schedule.segment_at(nimg / 1000)
        if segment != self.segment:
            self._start_segment(segment, nimg)
        batch = segment.minibatch
        iteration = nimg // batch
        settings = self.trainer.loss_settings
        phases = self.trainer.phases_of_iteration(iteration % settings.pl_interval == 0,
                                                  iteration % settings.r1_interval == 0)
        iterations = 1
        if self.compiled.in_one_call(phases):
            # G main + D main alone until the next lazy R1 (path length never runs with them
            # fused), the segment's end or max_images: one call (CompiledStep.loop_function).
            until_r1 = (settings.r1_interval - iteration % settings.r1_interval
                        if settings.lazy_r1 else math.inf)
            until_segment = (math.inf if math.isinf(segment.end_kimg) else
                             math.ceil((segment.end_kimg * 1000 - nimg) / batch))
            iterations = int(max(1, min(until_r1, until_segment, max_images // batch)))
        self.compiled(self.iterator, phases, iterations)
        return nimg + iterations * batch

    def _start_segment(self, segment, nimg):
        trainer, options = self.trainer, self.options
        self.segment = segment
        if int(trainer.segment_start_nimg.numpy()) < segment.start_kimg * 1000 or nimg == 0:
            # First step of this segment (not a resume inside it): NVlabs resets Adam.
            trainer.segment_start_nimg.assign(nimg)
            if trainer.progressive and nimg > 0:
                trainer.reset_optimizers()
        trainer.set_learning_rate(segment.learning_rate)
        consumed = nimg - int(trainer.segment_start_nimg.numpy())
        data = self.dataset.distribute(self.strategy, segment.minibatch, segment.resolution,
                                       start_image=consumed, mirror=options.mirror,
                                       seed=options.seed + int(segment.start_kimg))
        self.iterator = iter(data)
        self.compiled = CompiledStep(self.strategy, trainer, self.accumulator,
                                     segment.resolution, segment.minibatch, options.xla)
        self.log(f"Segment from kimg {segment.start_kimg:g}: resolution {segment.resolution}, "
                 f"minibatch {segment.minibatch}, lr {segment.learning_rate:g}"
                 + (f" (D {segment.learning_rate * trainer.d_lr_multiplier:g})"
                    if trainer.d_lr_multiplier != 1 else "")
                 + (" (fade-in)" if segment.fading else ""))

    # -- images --------------------------------------------------------------------------------

    def _stage(self, nimg):
        # The stage of the last step taken (a snapshot right after a segment's last step shows
        # that segment's networks), or of `nimg` before the first step.
        return (self.segment or self.schedule.segment_at(nimg / 1000)).resolution

    def _generate(self, z, labels, nimg):
        """Gs at the stage of `nimg` (constant noise), upscaled to the final resolution."""
        trainer, stage = self.trainer, self._stage(nimg)
        kwargs = {}
        if trainer.progressive:
            kwargs = dict(lod=tf.constant(self.schedule.lod(nimg / 1000), tf.float32),
                          resolution=stage)
        if trainer.is_style:
            kwargs["noise_mode"] = "const"
        images = trainer.Gs(tf.constant(z), None if labels is None else tf.constant(labels),
                            **kwargs).numpy()
        return images, stage

    def _grid(self, name, nimg):
        """The sample grid of Gs at `nimg` from fixed latents, at full resolution: 32 cells in
        8 columns, or for a conditional run one class per column (`loop.class_grid`)."""
        c_dim = self.options.label_size
        classes, columns = loop.class_grid(c_dim) if c_dim else (None, 8)
        count = 32 if classes is None else len(classes)
        rng = np.random.RandomState(self.options.seed + 123)
        z = rng.randn(count, self.trainer.z_dim).astype(np.float32)
        labels = None if classes is None else np.eye(c_dim, dtype=np.float32)[classes]
        parts = [self._generate(z[i:i + 16], None if labels is None else labels[i:i + 16], nimg)
                 for i in range(0, count, 16)]
        images, stage = np.concatenate([p[0] for p in parts]), parts[0][1]
        factor = self.options.resolution // stage
        if factor > 1:
            images = images.repeat(factor, axis=1).repeat(factor, axis=2)
        return [(name, "fakes", images, columns, grid_upscale(stage))]

    def grid_classes(self, count):
        """Conditional runs: one class per column (label_size: filled in when the data opens,
        before any grid)."""
        c_dim = self.options.label_size
        return loop.class_grid(c_dim, count)[0] if c_dim else None

    def initial_grids(self):
        return self._grid("fakes_init.png", 0)

    def snapshot_grids(self, nimg):
        return self._grid(loop.snapshot_grid_name(nimg), nimg)

    def swd_generator(self, nimg):
        def generate(rng, count):
            fakes = []
            for i in range(0, count, 64):
                n = min(64, count - i)
                labels = None
                if self.trainer.c_dim:
                    labels = np.eye(self.trainer.c_dim, dtype=np.float32)[
                        rng.randint(self.trainer.c_dim, size=n)]
                z = rng.randn(n, self.trainer.z_dim).astype(np.float32)
                fakes.append(self._generate(z, labels, nimg)[0])
            return np.concatenate(fakes)
        return self._stage(nimg), generate


def training_loop(options, run_dir, resume=False, log=print, stop_after_kimg=None,
                  **loop_options):
    """Trains per `options` (TrainingOptions) into `run_dir`; returns the run summary
    (training.loop.training_loop, which takes `loop_options`). `stop_after_kimg`: stop with a
    checkpoint there, as if killed (tests of exact resume)."""
    stop_at = None if stop_after_kimg is None else int(round(stop_after_kimg * 1000))
    return loop.training_loop(StyleGANRun(options, run_dir, log), resume, stop_at,
                              **loop_options)


def check_batch(global_batch, replicas, mbstd_group):
    """TrainingConfigError unless `global_batch` splits into per-replica batches that the
    minibatch-stddev groups divide."""
    distribute.check_global_batch(global_batch, replicas)
    per_replica = global_batch // replicas
    group = min(mbstd_group, per_replica)
    if per_replica % group:
        raise TrainingConfigError(f"per-replica batch {per_replica} is not divisible by the "
                                  f"minibatch-stddev group size {group}; use a per-replica batch "
                                  f"that is a multiple of {mbstd_group}.")


def sq_tick_statistics(trainer):
    """Codebook usage of G's style quantization since the last tick, then a new window.

    Returns {"sq/perplexity", "sq/unused_fraction", "sq/dead_codes", "sq/uniformity"} ({}
    without SQ): perplexity of the code counts of every w seen in the Gmain steps of the tick
    (K = uniform use, 1 = collapse), fraction and number of entries never picked, and L_uf of
    the current codebook (lower = more spread out).
    """
    if not trainer.use_sq:
        return {}
    stats = trainer.G.sq.usage_statistics()
    trainer.G.sq.reset_usage()
    return {f"sq/{k}": stats[k] for k in ("perplexity", "unused_fraction", "dead_codes",
                                         "uniformity")}


def initialize_sq_codebook(options, trainer, log, num_images=None):
    """SQ-GAN codebook initialisation (CBI) from --sq-cbi-features; returns the logged values.

    Runs outside strategy.scope() on one device (fq_keras.codebook_init), then copies G into Gs
    (they are equal before the first step), so every replica and Gs start from the CBI codebook.
    Called only for a new run: a resumed run takes its codebook from the checkpoint.
    """
    features = codebook_init.load_image_features(options.sq_cbi_features)
    start = time.time()
    history = codebook_init.initialize_codebook(
        trainer.G.sq, features, steps=options.sq_cbi_steps, learning_rate=options.sq_cbi_lr,
        epsilon=options.sq_cbi_epsilon, batch_size=options.sq_cbi_batch or None,
        seed=options.seed)
    trainer.copy_to_gs()
    cost = history["transport_cost"]
    # The features are an unordered set; a count unlike the dataset's is allowed, but noted.
    note = "" if num_images in (None, features.shape[0]) else \
        f" (the training set has {num_images} images)"
    log(f"Codebook initialisation: {len(cost)} steps on {features.shape[0]} image features "
        f"({features.shape[1]}-d){note}, transport cost {cost[0]:.4f} -> {cost[-1]:.4f}, "
        f"marginal error {history['marginal_error'][-1]:.2g}, {time.time() - start:.0f} s")
    return {"sq/cbi_transport_cost_initial": float(cost[0]),
            "sq/cbi_transport_cost_final": float(cost[-1]),
            "sq/cbi_marginal_error": float(history["marginal_error"][-1])}

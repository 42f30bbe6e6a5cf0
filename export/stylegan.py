"""Export of the StyleGAN family: ProGAN, StyleGAN and StyleGAN2 generators.

Signatures (N is dynamic; `labels` exists only for conditional models, c_dim > 0):

    serving_default(z float32 [N, z_dim], truncation_psi float32 [], labels float32 [N, c_dim])
        -> images uint8 [N, H, W, 3], images_float float32 [N, H, W, C] (clipped to [-1, 1])
    mapping(z, truncation_psi, labels) -> w float32 [N, num_ws, w_dim]      StyleGAN, StyleGAN2
    synthesis(w float32 [N, num_ws, w_dim]) -> images, images_float          StyleGAN, StyleGAN2

and serving_default(z, psi) = synthesis(mapping(z, psi)). `mapping` returns the truncated w
(stylegan2-ada-pytorch's `G.mapping(z, c, truncation_psi)`), so style mixing and other W-space
edits start from the same w that serving_default uses.

Style quantization (SQ-GAN generators, `G.sq` set): `mapping` returns the continuous,
truncated w (truncation happens in the continuous W space, towards the average of the continuous
w, as the in-memory generator does), and `synthesis` quantises its input with the generator's
codebook before synthesising (each sub-vector snaps to its nearest codebook entry; for w that is
already quantised this changes nothing), so serving_default(z, psi) =
synthesis(sq(truncate(mapping(z)))) = the in-memory `G(z, truncation_psi=psi)`, and W-space
edits (interpolation, style mixing) of `mapping` outputs are snapped onto the codebook exactly
as training did. The codebook is exposed as the SavedModel variable `sq_codebook` (K, code_dim)
and the metadata entry `style_quantization` holds its settings (None for other generators).

Truncation: w <- dlatent_avg + psi * (w - dlatent_avg) on dlatent layers < truncation_cutoff,
with the generator's own `dlatent_avg` (also exposed as the SavedModel variable `dlatent_avg`).
The cutoff follows each model's official convention: StyleGAN v1 8 (`G_style`'s default, so psi
only touches the coarse and middle styles of models above 32x32), StyleGAN2 all layers. psi = 1
is no truncation; psi = 0 gives dlatent_avg on every truncated layer: the average image for every
z when the cutoff covers all layers the model uses. ProGAN has no mapping network and no W space:
its serving_default keeps the truncation_psi input so that every generator has one signature, but
any value other than 1 fails (InvalidArgumentError) instead of silently returning untruncated
images.

Labels: the float label vectors the network was trained on: one-hot rows for class labels
(`tf.one_hot(class_ids, c_dim)`; run_generator.py's --class does this).

Noise: "const" (default: the stored noise maps, deterministic, as the official generation
scripts) or "none". Random noise is not exported (a SavedModel should be a function of its
inputs).

Progressive networks (ProGAN, StyleGAN, StyleGAN2 --progressive) are exported at a stage:
`resolution` and `lod`. From a run folder these come from the checkpoint (`run_settings`), so the
export produces exactly the run's last sample grid (before its nearest upscaling to the full
resolution).
"""

import math

import tensorflow as tf

from export.core import Exporter, ExportError, family_of, image_outputs, rebuild_run
from training import stylegan as stylegan_family

NOISE_MODES = ("const", "none")
# Official truncation cutoffs: NVlabs/stylegan G_style truncation_cutoff=8; StyleGAN2 (NVlabs TF
# and stylegan2-ada-pytorch) truncates every layer.
TRUNCATION_CUTOFF = {"stylegan": 8, "stylegan2": None}


def run_settings(options, nimg, segment_start_nimg):
    """{"resolution", "lod"} of the network a progressive run trained last ({} otherwise).

    Args:
      options: training.stylegan.TrainingOptions of the run.
      nimg: images shown so far (the trainer's `nimg`).
      segment_start_nimg: the trainer's `segment_start_nimg` (first image of the current
        schedule segment): the segment, hence the stage, of the last training step.

    The training loop samples its grids with exactly these (stage of the current segment,
    lod(nimg / 1000)).
    """
    if not options.is_progressive:
        return {}
    schedule = options.schedule()
    segment = schedule.segment_at(segment_start_nimg / 1000.0)
    return {"resolution": segment.resolution, "lod": schedule.lod(nimg / 1000.0)}


class StyleGANExporter(Exporter):
    """ProGAN (`networks.progan`), StyleGAN (`networks.stylegan`), StyleGAN2
    (`networks.stylegan2`) generators."""

    def copy_overrides(self, network):
        # The unfused modulated conv is the same function of the same weights, run as plain
        # convolutions (no per-sample kernels, which are slow without oneDNN).
        return {"fused_modconv": False} if "fused_modconv" in network.get_config() else {}

    def build(self, network, resolution=None, lod=None, noise_mode="const",
              truncation_cutoff="auto"):
        """Signature functions of a generator at a stage.

        Args:
          network: the generator (float32 export copy).
          resolution: stage of a progressive network (default: its full resolution).
          lod: level of detail within the stage (fade-in); None = the stage's own output.
          noise_mode: "const" or "none" (StyleGAN, StyleGAN2).
          truncation_cutoff: "auto" (the model's official convention), None (all layers) or
            an int: truncate dlatent layers < cutoff (StyleGAN, StyleGAN2).
        """
        G = network
        full = int(G.resolution)
        stage = full if resolution is None else resolution
        if (isinstance(stage, bool) or not isinstance(stage, int) or stage < 4
                or stage & (stage - 1) or stage > full):
            raise ExportError(f"resolution must be a power of two in [4, {full}], got "
                              f"{resolution!r}.")
        progressive = getattr(G, "progressive", True)
        if stage != full and not progressive:
            raise ExportError(f"resolution {stage}: {type(G).__name__} is a fixed-resolution "
                              f"network ({full}x{full}).")
        if lod is not None:
            if not progressive:
                raise ExportError("lod given for a fixed-resolution network.")
            offset = math.log2(full) - math.log2(stage)
            if not offset <= float(lod) <= offset + 1:
                raise ExportError(f"lod {lod} is outside stage {stage}'s range [{offset:g}, "
                                  f"{offset + 1:g}].")
        stage_args = {}
        if stage != full or lod is not None:
            stage_args["resolution"] = stage
            if lod is not None:
                stage_args["lod"] = tf.constant(float(lod), tf.float32)
        c_dim = int(getattr(G, "c_dim", 0))
        metadata = dict(z_dim=int(G.z_dim), c_dim=c_dim, resolution=stage,
                        network_resolution=full, lod=None if lod is None else float(lod))
        if hasattr(G, "mapping"):
            return self._style(G, stage, stage_args, noise_mode, truncation_cutoff, metadata)
        return self._progan(G, stage_args, noise_mode, truncation_cutoff, metadata)

    def _style(self, G, stage, stage_args, noise_mode, truncation_cutoff, metadata):
        if noise_mode not in NOISE_MODES:
            raise ExportError(f"noise_mode must be one of {NOISE_MODES} (exports are "
                              f"deterministic), got {noise_mode!r}.")
        if truncation_cutoff == "auto":
            cutoff = TRUNCATION_CUTOFF[family_of(G)]
        elif truncation_cutoff is None or (isinstance(truncation_cutoff, int)
                                           and not isinstance(truncation_cutoff, bool)
                                           and truncation_cutoff >= 1):
            cutoff = truncation_cutoff
        else:
            raise ExportError("truncation_cutoff must be 'auto', None (all layers) or an int "
                              f">= 1, got {truncation_cutoff!r}.")
        z_dim, c_dim, num_ws, w_dim = metadata["z_dim"], metadata["c_dim"], G.num_ws, G.w_dim
        z_spec = tf.TensorSpec([None, z_dim], tf.float32, name="z")
        psi_spec = tf.TensorSpec([], tf.float32, name="truncation_psi")
        labels_spec = tf.TensorSpec([None, c_dim], tf.float32, name="labels")
        w_spec = tf.TensorSpec([None, num_ws, w_dim], tf.float32, name="w")

        def mapping(z, truncation_psi, labels):
            if labels is not None:
                z, labels = _check_batch(z, labels)
            w = G.mapping(z, labels)
            # psi = 1 returns w itself, not avg + (w - avg) (equal only up to rounding), as
            # the eager generator and stylegan2-ada-pytorch skip truncation at 1.
            truncated = G.truncate(w, truncation_psi, cutoff)
            return {"w": tf.where(tf.equal(truncation_psi, 1.0), w, truncated)}

        sq = getattr(G, "sq", None)

        def synthesis(w):
            if sq is not None:
                w = sq(w)  # per-row nearest codebook entries (SQ-GAN)
            return image_outputs(G.synthesis(w, noise_mode=noise_mode, **stage_args))

        if c_dim:
            @tf.function(input_signature=[z_spec, psi_spec, labels_spec], autograph=False)
            def serving_default(z, truncation_psi, labels):
                return synthesis(mapping(z, truncation_psi, labels)["w"])

            @tf.function(input_signature=[z_spec, psi_spec, labels_spec], autograph=False)
            def mapping_fn(z, truncation_psi, labels):
                return mapping(z, truncation_psi, labels)
        else:
            @tf.function(input_signature=[z_spec, psi_spec], autograph=False)
            def serving_default(z, truncation_psi):
                return synthesis(mapping(z, truncation_psi, None)["w"])

            @tf.function(input_signature=[z_spec, psi_spec], autograph=False)
            def mapping_fn(z, truncation_psi):
                return mapping(z, truncation_psi, None)

        @tf.function(input_signature=[w_spec], autograph=False)
        def synthesis_fn(w):
            return synthesis(w)

        metadata.update(w_dim=int(w_dim), num_ws=int(num_ws),
                        num_ws_used=int(G.num_layers_at(stage)),
                        img_channels=int(G.synthesis.img_channels), noise_mode=noise_mode,
                        truncation=True, truncation_cutoff=cutoff, style_quantization=None)
        functions = {"serving_default": serving_default, "mapping": mapping_fn,
                     "synthesis": synthesis_fn}
        attributes = {"dlatent_avg": G.dlatent_avg}
        if sq is not None:
            metadata["style_quantization"] = dict(
                num_codes=int(sq.num_codes), code_dim=int(sq.code_dim),
                hyperspherical=bool(sq.hyperspherical))
            attributes["sq_codebook"] = sq.codebook
        return functions, metadata, attributes

    def _progan(self, G, stage_args, noise_mode, truncation_cutoff, metadata):
        if noise_mode != "const" or truncation_cutoff != "auto":
            raise ExportError("ProGAN has no noise inputs and no truncation: noise_mode and "
                              "truncation_cutoff do not apply.")
        z_dim, c_dim = metadata["z_dim"], metadata["c_dim"]
        z_spec = tf.TensorSpec([None, z_dim], tf.float32, name="z")
        psi_spec = tf.TensorSpec([], tf.float32, name="truncation_psi")
        labels_spec = tf.TensorSpec([None, c_dim], tf.float32, name="labels")

        def generate(z, truncation_psi, labels):
            check = tf.debugging.assert_equal(
                truncation_psi, tf.constant(1.0), message="ProGAN has no mapping network and "
                "no truncation; pass truncation_psi=1")
            with tf.control_dependencies([check]):
                if labels is not None:
                    z, labels = _check_batch(z, labels)
                return image_outputs(G(z, labels, **stage_args))

        if c_dim:
            @tf.function(input_signature=[z_spec, psi_spec, labels_spec], autograph=False)
            def serving_default(z, truncation_psi, labels):
                return generate(z, truncation_psi, labels)
        else:
            @tf.function(input_signature=[z_spec, psi_spec], autograph=False)
            def serving_default(z, truncation_psi):
                return generate(z, truncation_psi, None)

        metadata.update(img_channels=int(G.img_channels), noise_mode=None, truncation=False,
                        truncation_cutoff=None, num_ws=None, num_ws_used=None, w_dim=None)
        return {"serving_default": serving_default}, metadata, {}

    def load_run(self, run_dir, checkpoint=None):
        """Gs of a run (latest checkpoint by default) at the stage it reached."""
        checkpoint, options, networks, counts = rebuild_run(
            run_dir, checkpoint, lambda *run: stylegan_family.load_networks(*run, ("Gs",)),
            ("nimg", "segment_start_nimg"))
        nimg, start = counts["nimg"], counts["segment_start_nimg"]
        metadata = {"source": f"{run_dir} ({checkpoint})", "kimg": nimg / 1000.0}
        return networks["Gs"], run_settings(options, nimg, start), metadata


def _check_batch(z, labels):
    """z and labels, after a check that their batch sizes agree (ordered before any use: an
    unordered check could lose the race to the ops that fail on the mismatch themselves)."""
    check = tf.debugging.assert_equal(tf.shape(z)[0], tf.shape(labels)[0],
                                      message="z and labels must have the same batch size")
    with tf.control_dependencies([check]):
        return tf.identity(z), tf.identity(labels)


EXPORTER = StyleGANExporter()

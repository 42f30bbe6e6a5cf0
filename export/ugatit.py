"""Export of U-GAT-IT: both generators (genA2B, genB2A) in one image-to-image SavedModel.

Signatures (N is dynamic; S = the size the networks were trained at, metadata "resolution"):

    a2b(images uint8 [N, H, W, 3])            genA2B; serving_default is a2b
    b2a(images uint8 [N, H, W, 3])            genB2A
        -> images       uint8   [N, S, S, 3]  the translation, rint((x + 1) * 127.5)
           images_float float32 [N, S, S, 3]  the translation in [-1, 1]
           heatmap      uint8   [N, S, S, 3]  the generator's CAM attention map, coloured
           cam_logit    float32 [N, 2]        CAM classifier logits (GAP, GMP): "the input
                                              is from this generator's source domain"
    a2b_float(images_float float32 [N, S, S, 3] in [-1, 1]),  b2a_float(images_float)
        -> the same outputs, without the uint8 input stage, so translations chain exactly:
           b2a_float(images_float=a2b_float(images_float=x)["images_float"]) is the cycle.

Input images: any H x W, RGB uint8. Like the official test phase, every image is resized to
the training size S first: `tf.image.resize(images, [S, S], "bilinear", antialias=True)` then
[0, 255] -> [-1, 1] by x * 2/255 - 1, the test pipeline of datasets/unpaired.py (a resize to the
same size is the identity, so S x S inputs are translated as they are). Resizing ignores the
aspect ratio, as the official transform does; crop first to keep it.

Heatmap: the official `cam()` of the training strips and test phase
(networks.ugatit.cam_heatmap): the generator's heatmap (N, S/4, S/4, 1) is min-max
normalised per image, truncated to uint8, resized bilinearly to S x S, rounded, and coloured
with jet_colormap (OpenCV's COLORMAP_JET), here through a 256-entry table built from
jet_colormap itself.

Light-mode networks can be exported at another size (`size=`); full-mode networks only at the
size their MLP was built for.
"""

import tensorflow as tf

from datasets.unpaired import inference_transform
from export.core import Exporter, ExportError, float32_copy, image_outputs, rebuild_run
from networks.ugatit import cam_heatmap, jet_table
from training import ugatit as ugatit_family

GENERATORS = ("genA2B", "genB2A")   # a2b, b2a


class GeneratorPair:
    """genA2B and genB2A of one U-GAT-IT: what `export_generator` takes for this family.

        export.export_generator(GeneratorPair(nets["genA2B"], nets["genB2A"]), path)

    (a dict with "genA2B" and "genB2A" works too, with family="ugatit").
    """

    def __init__(self, genA2B, genB2A):
        self.genA2B = genA2B
        self.genB2A = genB2A

    def __iter__(self):
        return iter((self.genA2B, self.genB2A))


def as_pair(networks):
    """GeneratorPair from a GeneratorPair or a mapping holding genA2B and genB2A."""
    if isinstance(networks, GeneratorPair):
        return networks
    if hasattr(networks, "keys"):
        missing = [name for name in GENERATORS if name not in networks]
        if missing:
            raise ExportError(f"a U-GAT-IT export needs both generators; {' and '.join(missing)} "
                              f"missing (has {', '.join(networks) or 'nothing'}).")
        return GeneratorPair(networks["genA2B"], networks["genB2A"])
    raise ExportError(f"a U-GAT-IT export takes GeneratorPair(genA2B, genB2A) or a dict of "
                      f"them, got {type(networks).__name__}.")

#----------------------------------------------------------------------------
# Float32 export copies (the generators build their variables on first use).


def float32_generator(G):
    """A built float32 copy of a UGATITGenerator (same config), weights copied.

    Checks the generator maps RGB to RGB; an unbuilt one (converted weights restored before
    building) is built first, which completes its checkpoint restoration."""
    if not G.built:
        # Converted networks restore their weights when build() creates the variables.
        G.build((None, G.img_size, G.img_size, 3))
    in_channels = int(G.conv_in.kernel.shape[2])
    if in_channels != 3 or G.output_channels != 3:
        raise ExportError(f"{G.name}: U-GAT-IT exports translate RGB images; this generator maps "
                          f"{in_channels} to {G.output_channels} channels.")
    return float32_copy(G)

#----------------------------------------------------------------------------


class UGATITExporter(Exporter):
    """U-GAT-IT generators (`networks.ugatit.UGATITGenerator`), both directions."""

    def copy(self, network):
        return GeneratorPair(*(float32_generator(G) for G in as_pair(network)))

    def build(self, network, size=None, **others):
        """Signature functions of a generator pair (float32 export copies).

        Args:
          network: GeneratorPair.
          size: image side S the signatures translate at (default: the size the networks
            were built for, their img_size); light mode only may differ from it.
        """
        if others:
            raise ExportError(f"{', '.join(sorted(others))}: not a U-GAT-IT export setting (it "
                              "has no noise or truncation; its only setting is size).")
        pair = as_pair(network)
        A2B, B2A = pair
        if (A2B.light, A2B.img_size) != (B2A.light, B2A.img_size):
            raise ExportError(f"genA2B (light={A2B.light}, {A2B.img_size}px) and genB2A "
                              f"(light={B2A.light}, {B2A.img_size}px) differ; export the two "
                              "generators of one U-GAT-IT.")
        size = A2B.img_size if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or size % 4 or size < 8:
            raise ExportError(f"size {size!r}: U-GAT-IT translates images whose side is "
                              "divisible by 4 and at least 8.")
        if not A2B.light and size != A2B.img_size:
            raise ExportError(f"size {size}: a full-mode U-GAT-IT translates only "
                              f"{A2B.img_size}x{A2B.img_size} images (its MLP sees the flattened "
                              "features); only light-mode networks change size.")
        table = jet_table()
        uint8_spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
        float_spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images_float")

        def to_float(images):
            return inference_transform(images, size)   # the official test pipeline's

        def translate(G, x):
            image, cam_logit, heatmap = G(x, training=False)
            return {**image_outputs(image), "heatmap": cam_heatmap(heatmap, size, table),
                    "cam_logit": tf.cast(cam_logit, tf.float32)}

        def direction(G):
            # One pair of functions per generator (no default arguments: a SavedModel stores
            # a function's whole Python signature).
            @tf.function(input_signature=[uint8_spec], autograph=False)
            def from_uint8(images):
                return translate(G, to_float(images))

            @tf.function(input_signature=[float_spec], autograph=False)
            def from_float(images_float):
                return translate(G, images_float)

            return from_uint8, from_float

        functions = {}
        for name, G in (("a2b", A2B), ("b2a", B2A)):
            functions[name], functions[f"{name}_float"] = direction(G)
        functions["serving_default"] = functions["a2b"]
        metadata = {"class": f"{type(A2B).__module__}.{type(A2B).__name__}",
                    "resolution": size, "network_img_size": int(A2B.img_size),
                    "light": bool(A2B.light), "ngf": int(A2B.ngf),
                    "n_blocks": int(A2B.n_blocks), "img_channels": 3,
                    "directions": ["A2B", "B2A"],
                    "input_resize": "bilinear, antialiased (the test pipeline)",
                    "tool": "run_translation.py"}
        return functions, metadata, {}

    def converted_network(self, networks, path):
        """genA2B and genB2A of `run_convert.py --source ugatit-pytorch` output."""
        try:
            return as_pair(networks)
        except ExportError as error:
            raise ExportError(f"{path}: {error} Convert both generators (run_convert.py "
                              "--source ugatit-pytorch).") from None

    def load_run(self, run_dir, checkpoint=None):
        """Both generators of a run (latest checkpoint by default) at the run's size."""
        checkpoint, options, nets, counts = rebuild_run(
            run_dir, checkpoint, ugatit_family.load_networks, ("iteration",))
        iterations = counts["iteration"]
        metadata = {"source": f"{run_dir} ({checkpoint})", "iterations": iterations,
                    "kimg": iterations * options.minibatch / 1000.0}
        return GeneratorPair(nets["genA2B"], nets["genB2A"]), {"size": options.size}, metadata


EXPORTER = UGATITExporter()

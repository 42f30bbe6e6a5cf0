"""Generation speed of an exported generator against the in-memory one, and the export's cost.

    python bench/bench_export.py [--model stylegan2] [--resolution 32] [--batches 1,16]

Builds a generator of the demo config's widths (untrained: speed does not depend on the
weights), exports it, loads the SavedModel back in this process and times, side by side and
interleaved, for each batch size: the eager Keras call, the in-memory export functions (what
run_generator.py uses for checkpoints) and the loaded SavedModel's serving_default. Prints
images per second (median of the repeats) and each one's ratio to the eager call, plus the
seconds taken by export_generator and by tf.saved_model.load.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli_common  # noqa: E402

cli_common.import_tensorflow_quietly()   # TensorFlow's defaults, without its start-up noise

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import export  # noqa: E402
from networks import progan, stylegan, stylegan2  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "stylegan2", ["progan", "stylegan", "stylegan2"], "Generator.")
flags.DEFINE_integer("resolution", 32, "Output resolution.")
flags.DEFINE_list("batches", ["1", "16"], "Batch sizes to time.")
flags.DEFINE_integer("repeats", 15, "Timed repeats per function and batch (median reported).")

# run_training.py --config demo widths.
DEMO = dict(fmap_base=512, fmap_max=64)
LATENT = 64


def build(model, resolution):
    if model == "stylegan2":
        return stylegan2.Generator(z_dim=LATENT, w_dim=LATENT, resolution=resolution,
                                   mapping_layers=2, seed=0, **DEMO)
    if model == "stylegan":
        return stylegan.Generator(z_dim=LATENT, w_dim=LATENT, resolution=resolution,
                                  mapping_layers=2, mapping_fmaps=LATENT, seed=0, **DEMO)
    return progan.Generator(resolution=resolution, latent_size=LATENT, **DEMO)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # tf.saved_model.save logs every file it writes
    tf.get_logger().setLevel("WARNING")
    G = build(FLAGS.model, FLAGS.resolution)
    style = FLAGS.model != "progan"
    psi = tf.constant(0.7 if style else 1.0)
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        path = export.export_generator(G, os.path.join(root, "g"))
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        loaded = tf.saved_model.load(path)
        load_seconds = time.perf_counter() - start
        saved = loaded.signatures["serving_default"]
        memory = export.build_module(G).signatures()["serving_default"]

        def eager(z):
            kwargs = dict(truncation_psi=0.7, noise_mode="const") if style else {}
            return G(z, **kwargs)

        functions = {
            "eager Keras G": eager,
            "in-memory export": lambda z: memory(z=z, truncation_psi=psi)["images_float"],
            "SavedModel": lambda z: saved(z=z, truncation_psi=psi)["images_float"],
        }
        print(f"{FLAGS.model} {FLAGS.resolution}x{FLAGS.resolution}, demo widths: "
              f"export_generator {export_seconds:.2f} s, tf.saved_model.load {load_seconds:.2f} s")
        for batch in (int(b) for b in FLAGS.batches):
            z = tf.constant(np.random.RandomState(0).randn(batch, LATENT).astype(np.float32))
            times = {name: [] for name in functions}
            for fn in functions.values():
                fn(z).numpy()  # trace and warm up
            for _ in range(FLAGS.repeats):
                for name, fn in functions.items():
                    start = time.perf_counter()
                    fn(z).numpy()
                    times[name].append(time.perf_counter() - start)
            base = batch / np.median(times["eager Keras G"])
            for name, values in times.items():
                rate = batch / np.median(values)
                print(f"  batch {batch:3d}  {name:18s} {rate:9.1f} img/s   x{rate / base:5.2f}")


if __name__ == "__main__":
    app.run(main)

"""Dataset throughput: preparation (images/s at 256x256) and tf.data loading (images/s at 32x32).

    python bench/bench_datasets.py [--prep-images 200] [--loader-batches 300] [--batch 32]

Preparation: `create_from_images` on a folder of 256x256 JPEG and PNG files (the built-in shapes
rendered at 256, written once), timing decode + conversion + all levels of detail + TFRecord
writing, end to end. Loader: the full training pipeline (shuffle, batch, parse, uint8 -> float,
mirror, prefetch) at 32x32, from a TFRecord folder and from the in-memory built-in dataset,
after a warm-up of one epoch (steady state: decoded images cached); and the U-GAT-IT loader
(PNG decode, flip, resize 286, crop 256) for reference.

The loader's rate against what a StyleGAN2 32x32 training step consumes (the >= 10x margin) is
measured side by side with training in bench/bench_training.py.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli_common  # noqa: E402

cli_common.import_tensorflow_quietly()   # TensorFlow's defaults, without its start-up noise

from absl import app, flags  # noqa: E402
from PIL import Image  # noqa: E402

from datasets import open_dataset, open_unpaired, synthetic  # noqa: E402
from datasets.prepare import create_from_images, create_synthetic  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("prep-images", 200, "Images per preparation run (256x256).")
flags.DEFINE_integer("loader-images", 4096, "Images in the 32x32 loader dataset.")
flags.DEFINE_integer("loader-batches", 300, "Timed batches per loader measurement.")
flags.DEFINE_integer("batch", 32, "Batch size of the loader measurements.")


def time_pipeline(dataset, batches, warmup):
    iterator = iter(dataset)
    for _ in range(warmup):       # tracing, autotune, shuffle buffer, first epoch (the cache)
        next(iterator)
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        images = next(iterator)[0]
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def main(argv):
    del argv
    n, batch, batches = FLAGS['prep-images'].value, FLAGS.batch, FLAGS['loader-batches'].value
    print(f"CPU threads: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        images, _ = synthetic.shapes(n, 256, seed=0)
        for ext, options in (("jpg", dict(quality=95)), ("png", {})):
            folder = os.path.join(tmp, ext)
            os.makedirs(folder)
            for i, image in enumerate(images):
                Image.fromarray(image).save(os.path.join(folder, f"{i:05d}.{ext}"), **options)
            start = time.perf_counter()
            create_from_images(os.path.join(tmp, f"ds_{ext}"), folder, log=lambda *_: None)
            seconds = time.perf_counter() - start
            print(f"preparation  256x256 {ext.upper():4s} -> 7 levels of TFRecords: "
                  f"{n / seconds:8.1f} images/s  ({n} images, {seconds:.2f} s)")

        folder = os.path.join(tmp, "shapes32")
        create_synthetic(folder, "shapes", resolution=32, num_images=FLAGS['loader-images'].value,
                         log=lambda *_: None)
        rates = {}
        for name, source in (("TFRecord folder", folder), ("built-in shapes", "shapes")):
            dataset = open_dataset(source, resolution=32,
                                   num_images=FLAGS['loader-images'].value)
            warmup = dataset.info.num_images // batch + 20
            rates[name] = time_pipeline(dataset.pipeline(batch, mirror=True), batches, warmup)
            print(f"loader       32x32 {name:16s} full pipeline, batch {batch}: "
                  f"{rates[name]:10.1f} images/s")

        for folder_name, domain in zip(("trainA", "trainB"),
                                       synthetic.shapes2cartoon(64, 256, seed=0)):
            path = os.path.join(tmp, "pair", folder_name)
            os.makedirs(path)
            for k, image in enumerate(domain):
                Image.fromarray(image).save(os.path.join(path, f"{k}.png"))
        pair = open_unpaired(os.path.join(tmp, "pair"))
        rate = time_pipeline(pair.train_pipeline(256, batch_size=1), 100, 20)
        print(f"loader       U-GAT-IT 256x256 PNG folder (flip, resize 286, crop), batch 1: "
              f"{rate:8.1f} (A, B) pairs/s")

    print(f"(>= 10x margin for any trainer consuming under {min(rates.values()) / 10:.0f} "
          "images/s; bench/bench_training.py measures it against a StyleGAN2 step)")


if __name__ == "__main__":
    app.run(main)

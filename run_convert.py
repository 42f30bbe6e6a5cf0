"""Convert official network weights into this project's checkpoint format.

    python run_convert.py --input ffhq.npz --output converted/ffhq [--conv_clamp 256]
    python run_convert.py --source ugatit-pytorch --input selfie2anime_params_latest.pt \
        --output converted/selfie2anime [--img_size 256]

--input is a `.npz` of named arrays in the official naming (stylegan2-ada-pytorch: the
`state_dict()` of G / G_ema / D, keys prefixed 'G.', 'G_ema.', 'D.' or unprefixed for a single
network; ugatit-pytorch: the checkpoint's six state dicts, keys prefixed 'genA2B.', 'genB2A.',
'disGA.', 'disGB.', 'disLA.', 'disLB.'); a `.pt`/`.pth` state dict also works when PyTorch
happens to be installed. The README shows how to dump the `.npz` from an official pickle. The
output directory (new; never overwritten) loads with `networks.convert.load_networks(path)`;
converted U-GAT-IT generators translate with `run_translation.py --network <output>`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from networks import convert  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Official weights: .npz of named arrays (or a .pt/.pth state "
                    "dict when torch is installed).")
flags.DEFINE_string("output", None, "New directory for the converted networks.")
flags.DEFINE_enum("source", "stylegan2-ada-pytorch", sorted(convert.IMPORTERS),
                  "Code base whose naming the weights use.")
flags.DEFINE_float("conv_clamp", None, "Activation clamp the official model was trained with "
                   "(stylegan2-ada-pytorch mixed-precision models: 256); default: none, as the "
                   "official TF models.")
flags.DEFINE_integer("img_size", None, "ugatit-pytorch light-mode generators: the image size "
                     "they were trained at (default 256; full mode reads it from the weights).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.input or not FLAGS.output:
        raise app.UsageError("--input and --output are required.")
    if FLAGS.img_size is not None and FLAGS.source != "ugatit-pytorch":
        raise app.UsageError("--img_size applies to --source ugatit-pytorch only.")
    overrides = {} if FLAGS.conv_clamp is None else {"conv_clamp": FLAGS.conv_clamp}
    g_overrides = dict(overrides)
    if FLAGS.img_size is not None:
        g_overrides["img_size"] = FLAGS.img_size
    try:
        state = convert.read_state(FLAGS.input)
        nets = convert.IMPORTERS[FLAGS.source](state, generator_overrides=g_overrides,
                                               discriminator_overrides=overrides)
        named = {k: v for k, v in nets._asdict().items() if v is not None}
        convert.save_networks(FLAGS.output, **named)
    except (ValueError, OSError) as e:
        raise app.UsageError(str(e)) from None
    for name, net in named.items():
        size = getattr(net, "resolution", None)
        print(f"{name}: {type(net).__name__}, " + (f"{size}x{size}, " if size else "")
              + f"{net.count_params():,} parameters")
    print(f"Saved to {FLAGS.output} (load with networks.convert.load_networks).")


if __name__ == "__main__":
    app.run(main)

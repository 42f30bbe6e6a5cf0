"""Convert official network weights into this project's checkpoint format.

    python run_convert.py --network ffhq.npz --outdir converted/ffhq [--conv-clamp 256]
    python run_convert.py --source ugatit-pytorch --network selfie2anime_params_latest.pt \
        --outdir converted/selfie2anime [--resolution 256]

--network is a `.npz` of named arrays in the official naming (stylegan2-ada-pytorch: the
`state_dict()` of G / G_ema / D, keys prefixed 'G.', 'G_ema.', 'D.' or unprefixed for a single
network; ugatit-pytorch: the checkpoint's six state dicts, keys prefixed 'genA2B.', 'genB2A.',
'disGA.', 'disGB.', 'disLA.', 'disLB.'); a `.pt`/`.pth` state dict also works when PyTorch
happens to be installed. The README shows how to dump the `.npz` from an official pickle. The
--outdir directory (new; never overwritten) loads with `networks.convert.load_networks(path)`;
converted U-GAT-IT generators translate with `run_translation.py --network <outdir>`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

import cli_common  # noqa: E402

cli_common.import_tensorflow_quietly()   # networks.convert imports TensorFlow

from networks import convert  # noqa: E402

FLAGS = flags.FLAGS
# Old spellings, kept for one release (cli_common).
RENAMED = {"input": "network", "output": "outdir", "conv_clamp": "conv-clamp",
           "img_size": "resolution"}


def define_flags(fv=FLAGS):
    """All flags of run_convert.py (defined only when run as a script, or on `fv`)."""
    d = dict(flag_values=fv)
    flags.DEFINE_string("network", None, "Official weights: .npz of named arrays (or a "
                        ".pt/.pth state dict when torch is installed).", **d)
    flags.DEFINE_string("outdir", None, "New directory for the converted networks.", **d)
    flags.DEFINE_enum("source", "stylegan2-ada-pytorch", sorted(convert.IMPORTERS),
                      "Code base whose naming the weights use.", **d)
    flags.DEFINE_float("conv-clamp", None, "Activation clamp the official model was trained "
                       "with (stylegan2-ada-pytorch mixed-precision models: 256); default: none, "
                       "as the official TF models.", **d)
    flags.DEFINE_integer("resolution", None, "ugatit-pytorch light-mode generators: the image "
                         "size they were trained at (default 256; full mode reads it from the "
                         "weights).", **d)
    cli_common.define_renamed(fv, RENAMED)


def main(argv, fv=FLAGS):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli_common.warn_renamed("run_convert.py", fv, RENAMED)
    if not fv.network or not fv.outdir:
        raise app.UsageError("--network (the official weights) and --outdir are required.")
    resolution, conv_clamp = fv.resolution, fv["conv-clamp"].value
    if resolution is not None and fv.source != "ugatit-pytorch":
        raise app.UsageError("--resolution applies to --source ugatit-pytorch only (the other "
                             "sources read it from the weights).")
    overrides = {} if conv_clamp is None else {"conv_clamp": conv_clamp}
    g_overrides = dict(overrides)
    if resolution is not None:
        g_overrides["img_size"] = resolution
    try:
        state = convert.read_state(fv.network)
        nets = convert.IMPORTERS[fv.source](state, generator_overrides=g_overrides,
                                            discriminator_overrides=overrides)
        named = {k: v for k, v in nets._asdict().items() if v is not None}
        convert.save_networks(fv.outdir, **named)
    except (ValueError, OSError) as e:
        raise app.UsageError(str(e)) from None
    for name, net in named.items():
        size = getattr(net, "resolution", None)
        print(f"{name}: {type(net).__name__}, " + (f"{size}x{size}, " if size else "")
              + f"{net.count_params():,} parameters")
    print(f"Saved to {fv.outdir} (load with networks.convert.load_networks).")
    return 0


def run(argv, fv=FLAGS):
    """main() with usage errors as one line on stderr and exit status 2."""
    return cli_common.run("run_convert.py", main, argv, fv)


if __name__ == "__main__":
    define_flags()
    cli_common.start("run_convert.py", run)

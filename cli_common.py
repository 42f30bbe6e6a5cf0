"""What every command-line tool of the project shares.

run_training.py, run_generator.py, run_export.py, run_metrics.py, run_convert.py,
run_translation.py and `python -m datasets.prepare` speak one dialect: dashes in flag names,
`--network` for what is read, `--outdir` for a folder a tool creates and fills, `--out` for the
one run folder or file it writes, and the same `--trunc`, `--batch`, `--num-images`,
`--resolution`, `--seeds` everywhere. A mistake a user can make is one line on stderr,
`<tool>: error: <what and how to fix it>`, with exit status 2: a malformed flag value as well
as a check of the tool's own. Flags renamed to that dialect keep their old spelling for one
release, with a one-line notice.
"""

import sys

from absl import app, flags


def usage_error(tool, message):
    """Prints `<tool>: error: <message>` on stderr; returns the exit status 2."""
    print(f"{tool}: error: {message}", file=sys.stderr)
    return 2


def run(tool, main, argv, fv):
    """main(argv, fv), with app.UsageError as one line on stderr and exit status 2."""
    try:
        return main(argv, fv)
    except app.UsageError as error:
        return usage_error(tool, error)


def parse_flags(tool, fv, argv):
    """fv(argv), where a flag value absl cannot parse (a word for a number, an unknown enum
    value, an unknown flag) is one line on stderr and SystemExit(2) (absl would print two
    lines and exit 1). Returns the remaining arguments."""
    try:
        return fv(argv)
    except flags.Error as error:
        sys.exit(usage_error(tool, error))


def start(tool, run_fn):
    """The `__main__` of a tool: app.run(run_fn), its flags parsed by `parse_flags`."""
    app.run(run_fn, flags_parser=lambda argv: parse_flags(tool, flags.FLAGS, argv))


def define_renamed(fv, renamed):
    """The old spellings {old: new} of renamed flags, as aliases of the new flags."""
    for old, new in renamed.items():
        flags.DEFINE_alias(old, new, flag_values=fv)


def warn_renamed(tool, fv, renamed):
    """One notice on stderr for each old spelling on the command line."""
    for old, new in renamed.items():
        if old in fv and fv[old].present:
            print(f"{tool}: --{old} is deprecated and goes in the next release; use --{new}.",
                  file=sys.stderr)

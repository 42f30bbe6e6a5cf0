"""One dialect for every command-line tool (cli_common): dashes, the shared flag names, usage
errors as one line on stderr with exit status 2, old spellings working for one release."""

import pytest
from absl import flags

import cli_common
import run_convert
import run_export
import run_generator
import run_metrics
import run_training
import run_translation

TOOLS = {"run_training.py": run_training, "run_generator.py": run_generator,
         "run_export.py": run_export, "run_metrics.py": run_metrics,
         "run_convert.py": run_convert, "run_translation.py": run_translation}
# A value absl cannot parse, per flag type (string and list flags take any text).
MALFORMED = {"int": "three", "float": "x1.5", "bool": "maybe", "enum": "no-such-choice"}


def tool_flags(module):
    fv = flags.FlagValues()
    module.define_flags(fv)
    return fv


def own_flags(fv):
    """{name: flag} of the tool's flags, aliases (old spellings) left out."""
    return {name: flag for name, flag in fv._flags().items()
            if name == flag.name and type(flag).__name__ != "_FlagAlias"}


def one_line(capsys, tool):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{tool}: error: "), err
    return err[0]


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_flag_names_use_dashes_and_the_shared_vocabulary(tool):
    module = TOOLS[tool]
    names = set(own_flags(tool_flags(module)))
    assert not [n for n in names if "_" in n], "flag names use dashes"
    # Spellings the tools share; none of the retired ones remains (except as an alias).
    retired = {"generator", "input_dir", "output", "num_images", "truncation_psi", "batch_size",
               "img-size", "img_size", "size", "data"}
    assert not names & retired, names & retired
    if tool != "run_training.py":
        assert "network" in names
    if tool in ("run_generator.py", "run_export.py", "run_convert.py", "run_translation.py"):
        assert "outdir" in names


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_a_malformed_flag_value_is_one_line_and_exit_2(tool, capsys):
    module = TOOLS[tool]
    checked = 0
    for name, flag in sorted(own_flags(tool_flags(module)).items()):
        kind = flag.flag_type()
        if kind not in MALFORMED:
            continue
        with pytest.raises(SystemExit) as stop:
            cli_common.parse_flags(tool, tool_flags(module), [tool, f"--{name}={MALFORMED[kind]}"])
        assert stop.value.code == 2
        assert f"--{name}" in one_line(capsys, tool)
        checked += 1
    assert checked >= 1
    with pytest.raises(SystemExit) as stop:
        cli_common.parse_flags(tool, tool_flags(module), [tool, "--no-such-flag=1"])
    assert stop.value.code == 2 and "no-such-flag" in one_line(capsys, tool)


@pytest.mark.parametrize("tool", sorted(set(TOOLS) - {"run_training.py"}))
def test_a_missing_network_is_one_line_and_exit_2(tool, capsys, tmp_path):
    module = TOOLS[tool]
    fv = tool_flags(module)
    outdir = ["--outdir", str(tmp_path / "o")] if "outdir" in own_flags(fv) else []
    command = ["generate-images"] if tool == "run_generator.py" else []
    fv([tool, *outdir])
    assert module.run([tool, *command], fv) == 2
    assert "--network" in one_line(capsys, tool)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("tool", sorted(t for t in TOOLS if getattr(TOOLS[t], "RENAMED", {})))
def test_old_spellings_still_work_with_a_one_line_notice(tool, capsys):
    module = TOOLS[tool]
    renamed = module.RENAMED
    for old, new in renamed.items():
        fv = tool_flags(module)
        value = {"int": "12", "float": "0.5", "bool": "true"}.get(fv[new].flag_type(), "x")
        fv([tool, f"--{old}={value}"])
        assert fv[new].present and str(fv[new].value).lower() in (value, "12", "0.5", "true",
                                                                  "['x']")
        cli_common.warn_renamed(tool, fv, renamed)
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"{tool}: --{old} is deprecated and goes in the next release; use "
                       f"--{new}."]

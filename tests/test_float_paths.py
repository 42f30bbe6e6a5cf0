"""The convolution, layer, converter and export tests once more under the other CPU float path.

TensorFlow chooses its CPU kernels when it is imported: oneDNN by default on CPUs with
AVX-512-class features, Eigen elsewhere (AVX2 machines); `TF_ENABLE_ONEDNN_OPTS=0/1` overrides
the choice. The two differ in which kernels exist (Eigen has no grouped transposed convolution
and no grouped-convolution gradients) and in their float32 summation order. The rest of the
suite runs under this machine's default; this module reruns the modules that exercise those
kernels (all but their command-line tests) in a subprocess with the setting flipped, so one
test command covers both paths on any x86 machine.
"""

import os
import subprocess
import sys

import pytest

from networks.layers import onednn_enabled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOAT_PATH_MODULES = ("test_layers.py", "test_normalization.py", "test_convert.py",
                      "test_convert_ugatit.py", "test_convert_biggan.py", "test_export.py")
# Command-line round trips in those modules (file handling around conversions and exports whose
# numbers the other tests check) and the tests marked one_float_path (file handling, or a test
# that starts its own process with a chosen path) are run once, under this machine's default.
FLIPPED_SELECTION = "not test_cli_"
FLIPPED_MARKERS = "not one_float_path"
_NESTED = "FQ_GAN_FLOAT_PATH_RUN"  # set in the subprocess: never flip twice


@pytest.mark.skipif(os.environ.get(_NESTED) == "1", reason="already the flipped run")
def test_float_path_modules_pass_with_onednn_flipped():
    flipped = 0 if onednn_enabled() else 1
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=str(flipped), TF_CPP_MIN_LOG_LEVEL="2",
               **{_NESTED: "1"})
    modules = [os.path.join("tests", m) for m in FLOAT_PATH_MODULES]
    # One interpreter reports the kernels it got, then runs the modules (serially: this test
    # holds one of the suite's workers).
    code = ("import sys, pytest; from tensorflow.python.util import _pywrap_util_port as p; "
            "print('onednn', int(p.IsMklEnabled()), flush=True); "
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'no:xdist', "
            f"'-k', {FLIPPED_SELECTION!r}, '-m', {FLIPPED_MARKERS!r}, *{modules!r}]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=1800)
    lines = result.stdout.strip().splitlines()
    assert lines and lines[0] == f"onednn {flipped}", result.stdout[:2000] + result.stderr[-2000:]
    assert result.returncode == 0, (f"with TF_ENABLE_ONEDNN_OPTS={flipped}: {lines[-1]}\n"
                                    f"{result.stdout[-6000:]}\n{result.stderr[-2000:]}")
    assert " passed" in lines[-1] and "failed" not in lines[-1], lines[-1]

"""Repository contracts: CI runs exactly the README's test command."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def test_ci_runs_the_readme_test_command():
    readme_commands = [line for line in _read("README.md").splitlines()
                       if line.startswith("python3 -m venv .venv")]
    assert len(readme_commands) >= 2, "README must start with the train and test commands"
    test_command = next(c for c in readme_commands if "pytest" in c)
    ci_lines = _read(".ci/run").splitlines()
    assert test_command in ci_lines


def test_requirements_pin_tensorflow_and_exclude_addons():
    requirements = _read("requirements.txt")
    assert "tensorflow==2.21.*" in requirements.splitlines()
    assert "addons" not in requirements

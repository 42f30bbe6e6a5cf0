"""Repository contracts: CI runs exactly the README's test command."""

import ast
import email.parser
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile


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


PACKAGES = ("fq_keras", "networks", "datasets", "training", "metrics", "export")


def project_modules():
    """{module name: path} of the packages and the top-level CLIs."""
    modules = {}
    for name in sorted(os.listdir(ROOT)):
        if name.endswith(".py"):
            modules[name[:-3]] = os.path.join(ROOT, name)
    for package in PACKAGES:
        for name in sorted(os.listdir(os.path.join(ROOT, package))):
            if name.endswith(".py"):
                module = package if name == "__init__.py" else f"{package}.{name[:-3]}"
                modules[module] = os.path.join(ROOT, package, name)
    return modules


def import_graph(modules):
    """{module: {project modules it imports}}: every import statement, at any depth (inside
    functions too), `from package import submodule` resolved to the submodule, and importing
    `a.b` counted as importing its package `a` as well."""
    graph = {}
    for module, path in modules.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        edges = set()
        for target in targets:
            parts = target.split(".")
            edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1)
                         if ".".join(parts[:i]) in modules)
        graph[module] = edges - {module, module.split(".")[0]}
    return graph


def test_import_graph_of_the_project_has_no_cycle():
    """No module imports (directly or through others) a module that imports it back, counting
    imports inside functions too: so none of them is deferred only to dodge a cycle."""
    graph = import_graph(project_modules())
    assert {"training.loop", "training.stylegan", "export.stylegan", "run_training"} <= set(graph)
    assert "training.stylegan" in graph["export.stylegan"]     # the resolution works
    state = {}

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_checkouts_packages_win_over_installed_ones():
    """Run from the checkout, the project's generic package names are its own folders, never
    a distribution's of the same name (Hugging Face's `datasets`): `python run_*.py` puts the
    script's folder first on sys.path, `python -m` the current folder, and tests/conftest.py
    the checkout (pytest imports it before any test module)."""
    assert sys.path.index(ROOT) < min(
        [i for i, path in enumerate(sys.path) if path.endswith("site-packages")] or [len(sys.path)])
    for name in PACKAGES:
        assert importlib.import_module(name).__file__ == os.path.join(ROOT, name, "__init__.py")


# The wheel's dependencies: what fq_keras imports, pinned as requirements.txt pins them.
WHEEL_REQUIREMENTS = ("tensorflow==2.21.*", "keras==3.15.*", "numpy==2.4.*")


def test_pip_install_gives_fq_keras_alone_importable_outside_the_checkout(tmp_path):
    """`pip install .` installs `fq_keras` and no other top-level package (generic names like
    `datasets` would overwrite other distributions'), with its dependencies declared as in
    requirements.txt. Offline and fast: a wheel built with this environment's setuptools from
    a copy of the checkout (an in-tree build would leave build/ and *.egg-info behind),
    installed without dependencies into a fresh venv that sees this environment's TensorFlow
    through a .pth file, imported from a folder outside the checkout."""
    for tool in ("setuptools", "wheel"):   # requirements-test.txt installs both
        assert importlib.util.find_spec(tool) is not None, f"building a wheel offline needs {tool}"
    source, dist, venv, elsewhere = (tmp_path / n for n in ("src", "dist", "venv", "elsewhere"))
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="2")
    pip = [sys.executable, "-m", "pip", "--no-input"]

    def run(command, **kwargs):
        proc = subprocess.run(command, env=env, capture_output=True, text=True, **kwargs)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.stdout

    run(pip + ["wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist),
               str(source)])
    wheel, = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        top_level = archive.read(f"{info}/top_level.txt").decode().split()
    assert top_level == ["fq_keras"] and {n.split("/")[0] for n in names} == {"fq_keras", info}
    assert sorted(metadata.get_all("Requires-Dist")) == sorted(WHEEL_REQUIREMENTS)
    assert set(WHEEL_REQUIREMENTS) <= set(_read("requirements.txt").splitlines())

    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    run(pip + ["install", "-q", "--no-deps", "--no-index", "--prefix", str(venv), str(wheel)])
    site, = venv.glob("lib/python*/site-packages")
    outer = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    (site / "outer-environment.pth").write_text("\n".join(sorted(outer)) + "\n")
    elsewhere.mkdir()
    out = run([str(venv / "bin" / "python"), "-c",
               "import fq_keras, numpy as np; print(fq_keras.__file__); "
               "fq = fq_keras.FeatureQuantization(4); fq(np.zeros((2, 3), 'float32')); "
               "print(fq.embeddings.shape)"], cwd=elsewhere)
    path, shape = out.splitlines()[-2:]
    assert path == str(site / "fq_keras" / "__init__.py") and shape == "(4, 3)"

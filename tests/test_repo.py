"""Repository contracts: CI runs exactly the README's test command."""

import ast
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

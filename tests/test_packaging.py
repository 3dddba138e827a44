"""The package's metadata, environment.yml, README and CI agree with each other."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    name = re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0]
    name = name.lower().replace("_", "-")
    return CONDA_NAMES.get(name, name)


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = {_name(d) for d in env["dependencies"] if isinstance(d, str)} - {"python", "pip"}
    assert listed == wanted, (
        f"only in pyproject: {sorted(wanted - listed)}; only in environment.yml: {sorted(listed - wanted)}"
    )


def test_issue_dependencies_are_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    assert {"torch", "xarray", "astropy", "spectral-cube", "reproject", "ipywidgets",
            "matplotlib", "zarr", "tqdm"} <= names
    extras = project["optional-dependencies"]
    assert {"pytest", "nbval"} <= {_name(r) for r in extras["test"]}
    assert "jupyterlab" in {_name(r) for r in extras["lab"]}
    assert project["requires-python"] == ">=3.11"


def _quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_opens_its_quickstart_with_two_commands():
    commands = _quickstart_commands()
    assert len(commands) == 2
    assert "iris-nb quickstart" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    ci_command = ci.split("# TEST_COMMAND_BEGIN\n", 1)[1].split("# TEST_COMMAND_END", 1)[0].strip()
    assert ci_command == _quickstart_commands()[1]

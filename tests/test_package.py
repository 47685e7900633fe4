"""The distribution installs one top-level package, ``dnnsplit``, and nothing else.

The repository keeps its packages in top-level folders (predictor/, collectors/, ...); the
package index has other distributions named ``executor``, ``partition``, ``predictor`` and
``collectors``, so a wheel that installed those names would break one of the two.
"""

import ast
import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = {"predictor", "collectors", "partition", "executor", "datasets"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                           "--wheel-dir", str(out), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("dnnsplit-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_dnnsplit_is_the_only_top_level_package(wheel):
    names = wheel.namelist()
    tops = {n.split("/", 1)[0] for n in names if ".dist-info/" not in n}
    assert tops == {"dnnsplit"}
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert wheel.read(top_level).decode().split() == ["dnnsplit"]
    for package in SUBPACKAGES:
        assert f"dnnsplit/{package}/__init__.py" in names


def test_wheel_carries_the_shipped_data(wheel):
    names = set(wheel.namelist())
    shipped = [p.relative_to(ROOT) for p in (ROOT / "datasets").rglob("*")
               if p.suffix in {".csv", ".json"}]
    grids = [p.relative_to(ROOT) for p in (ROOT / "collectors" / "grids").glob("*.json")]
    assert shipped and grids
    for path in shipped + grids:
        assert f"dnnsplit/{path.as_posix()}" in names


def test_console_scripts_point_into_dnnsplit(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    scripts = dict(parser["console_scripts"])
    assert scripts == {name: f"dnnsplit.{name}.cli:main"
                       for name in ("collectors", "predictor", "partition", "executor")}


def test_no_module_imports_a_bare_subpackage_name(wheel):
    """Every import of the project's own code goes through ``dnnsplit.``: a bare ``import
    executor`` (or ``files("collectors")``) would find another distribution's package, or
    none, once installed."""
    offenders = []
    for name in wheel.namelist():
        if not name.endswith(".py"):
            continue
        tree = ast.parse(wheel.read(name).decode(), filename=name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module or ""]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "files":
                # importlib.resources.files("package"): imports the package by name
                modules = [a.value for a in node.args[:1] if isinstance(a, ast.Constant)]
            else:
                continue
            offenders += [f"{name}:{node.lineno} {m}" for m in modules
                          if m.split(".")[0] in SUBPACKAGES | {"dnnsplit_datasets"}]
    assert offenders == []

"""The installable package: pyproject.toml agrees with the pinned requirements, and the wheel works.

The fast tests read pyproject.toml: the [serve] extra is exactly requirements-serve.txt, every pin
of requirements*.txt satisfies the extras' ranges, and every console script names a `run` that
exists. The slow tests build the wheel in a temporary copy of the package and install it:

- into a fresh venv (no system site-packages) with only the [serve] extra, where `import torch`
  must fail and `jbert-serve score` must score a file of a tiny export;
- editable (`pip install -e .[train]`) into a venv that sees this interpreter's packages
  (`--system-site-packages` and `--no-deps`: the training stack is gigabytes, already installed
  here, and what is tested is jbert's own install and entry points, not pip's resolver), where
  `jbert-train --help` and `jbert-export --help` must work and bad input must exit with code 2.

pip reads its usual configuration and cache, so wheels already downloaded are reused; without a
network the serve install still works from the cache or a configured local index.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import jbert

REPO_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PIP_TIMEOUT = 900


def _pins(path: Path) -> dict[str, str]:
    """name -> pinned version of a requirements file (`name[extra]==1.2  # comment` lines)."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def _extra(name: str) -> dict[str, Requirement]:
    """The extra's own requirements (references to other jbert extras left out)."""
    requirements = [Requirement(text) for text in PYPROJECT["project"]["optional-dependencies"][name]]
    return {canonicalize_name(r.name): r for r in requirements if canonicalize_name(r.name) != "jbert"}


def test_serve_extra_is_exactly_requirements_serve():
    assert set(_extra("serve")) == set(_pins(REPO_ROOT / "requirements-serve.txt"))


def test_every_pin_satisfies_the_package_ranges():
    """requirements*.txt stay the tested set; the ranges in pyproject.toml must admit them."""
    pins = _pins(REPO_ROOT / "requirements.txt") | _pins(REPO_ROOT / "requirements-serve.txt")
    ranges = [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
    for extra in PYPROJECT["project"]["optional-dependencies"]:
        ranges += _extra(extra).values()
    unpinned = sorted({canonicalize_name(r.name) for r in ranges} - set(pins))
    assert not unpinned, f"in pyproject.toml but pinned in no requirements file: {unpinned}"
    refused = [f"{r} refuses {pins[canonicalize_name(r.name)]}" for r in ranges
               if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)]
    assert not refused


def test_console_scripts_name_the_cli_run_functions():
    """Each script runs `jbert.<stage>.cli:run` (main wrapped by run_cli: exit codes 2 and 1)."""
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts == {f"jbert-{stage}": f"jbert.{stage}.cli:run" for stage in ("train", "export", "serve")}
    for target in scripts.values():
        module = target.split(":")[0]
        source = (REPO_ROOT / Path(*module.split("."))).with_suffix(".py")
        assert source.is_file(), f"{target}: {source} does not exist"
        assert re.search(r"^def run\(argv[^)]*\) -> int:", source.read_text(encoding="utf-8"), re.M), target


def test_version_is_written_once():
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "jbert.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", jbert.__version__)


# --------------------------------------------------------------------------- build and install


def _package_copy(tmp_path: Path) -> Path:
    """What the build needs, copied, so that building leaves nothing (build/, egg-info) in the checkout."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "jbert", source / "jbert", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return source


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, timeout=PIP_TIMEOUT, **kwargs)


def _venv(path: Path, system_site_packages: bool) -> Path:
    venv.create(path, with_pip=True, system_site_packages=system_site_packages, symlinks=True)
    return path / "bin"


def _check(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"{done.args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_wheel_with_the_serve_extra_scores_a_file_without_torch(tmp_path, export_dir):
    source = _package_copy(tmp_path)
    wheels = tmp_path / "wheels"
    _check(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, source], cwd=tmp_path))
    (wheel,) = wheels.glob("jbert-*.whl")
    assert wheel.name == f"jbert-{jbert.__version__}-py3-none-any.whl"

    bin_dir = _venv(tmp_path / "venv-serve", system_site_packages=False)
    _check(_run([bin_dir / "python", "-m", "pip", "install", "-q", f"{wheel}[serve]"], cwd=tmp_path))
    for heavy in ("torch", "transformers"):
        done = _run([bin_dir / "python", "-c", f"import {heavy}"], cwd=tmp_path)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, f"{heavy} is importable in the serve venv"
    done = _check(_run([bin_dir / "python", "-c", "import jbert; print(jbert.__file__, jbert.__version__)"], cwd=tmp_path))
    assert str(tmp_path / "venv-serve") in done.stdout and jbert.__version__ in done.stdout  # the wheel, not the checkout

    texts = ["この商品はとても良いです。", "最悪の料理でした。", "今日は雨"]
    input_csv, output_csv = tmp_path / "in.csv", tmp_path / "out.csv"
    with open(input_csv, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["text"], *[[text] for text in texts]])
    done = _check(_run([bin_dir / "jbert-serve", "score", export_dir, input_csv, output_csv, "--quiet"], cwd=tmp_path))
    with open(output_csv, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["text"] for row in rows] == texts
    labels = set(json.loads((export_dir / "config.json").read_text(encoding="utf-8"))["id2label"].values())
    assert all(row["predicted_label"] in labels for row in rows), rows
    done = _run([bin_dir / "jbert-serve", "score", tmp_path / "no-such-export", input_csv, tmp_path / "x.csv"], cwd=tmp_path)
    assert done.returncode == 2 and "error:" in done.stderr  # UserError -> exit 2, as serve_onnx.py


@pytest.mark.slow
def test_editable_install_with_the_train_extra_gives_the_console_scripts(tmp_path):
    source = _package_copy(tmp_path)
    bin_dir = _venv(tmp_path / "venv-train", system_site_packages=True)
    _check(_run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "-e", f"{source}[train]"], cwd=tmp_path))
    done = _check(_run([bin_dir / "python", "-c", "import jbert; print(jbert.__file__)"], cwd=tmp_path))
    assert done.stdout.strip() == str(source / "jbert" / "__init__.py")  # editable: the source tree itself

    done = _check(_run([bin_dir / "jbert-train", "--help"], cwd=tmp_path))
    assert "--model_name_or_path" in done.stdout
    done = _check(_run([bin_dir / "jbert-export", "--help"], cwd=tmp_path))
    assert "--min_agreement" in done.stdout and "usage: jbert-export" in done.stdout
    done = _run([bin_dir / "jbert-export", tmp_path / "no-such-model", tmp_path / "onnx"], cwd=tmp_path)
    assert done.returncode == 2 and "error:" in done.stderr, done.stderr  # UserError -> exit 2, as export.py

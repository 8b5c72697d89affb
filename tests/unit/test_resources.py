"""Package data: topologies and image recipes come with the package, the same from a wheel.

The wheel test builds the package the way a wheel gets it (setuptools' build_py, into
a temporary directory, from a copy of the sources) and checks that it holds every
topology and image recipe, that image hashes computed from it equal the checkout's
(or an installed wheel would rebuild every image), and that ``testbed plan`` works
from a directory that is neither the checkout nor the build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from testbed import matrix, resources
from testbed.cli import main
from testbed.recipes import bundled_recipes, content_hashes, discover_images

REPO = Path(__file__).resolve().parents[2]
SUITES = ("bookworm", "trixie")
# What the wheel is built from: the project files setuptools reads, and the data the
# package's symlinks point at.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "testbed", "topologies", "exercises", "images")
_JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def tree(root: Path) -> dict[str, int]:
    """Every regular file below ``root`` (symlinks followed): relative path -> executable bit."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            path = Path(dirpath, name)
            found[path.relative_to(root).as_posix()] = path.stat().st_mode & 0o111
    return found


def all_hashes(recipes) -> dict[str, dict[str, str]]:
    return {suite: content_hashes(recipes, None, suite) for suite in SUITES}


@pytest.fixture(scope="module")
def built_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory a wheel's files come from (``build/lib``): holds ``testbed/``."""
    work = tmp_path_factory.mktemp("wheel-build")
    source = work / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, source / name, symlinks=True, ignore=_JUNK)
        else:
            shutil.copy2(src, source / name)
    build_lib = work / "lib"
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build_lib)],
        cwd=source, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return build_lib


# ------------------------------------------------------------------ the checkout


def test_resources_list_the_checkout_top_level_directories() -> None:
    assert resources.topology_names() == sorted(p.stem for p in (REPO / "topologies").glob("*.yaml"))
    assert tree(resources.topologies_dir()) == tree(REPO / "topologies")
    assert tree(resources.images_dir()) == tree(REPO / "images")
    assert resources.context_root() == REPO
    assert resources.default_matrix_spec().is_file()


def test_a_bundled_topology_is_found_by_name_and_an_unknown_one_is_not() -> None:
    path = resources.bundled_topology("mx-routing")
    assert path is not None and path.read_bytes() == (REPO / "topologies/mx-routing.yaml").read_bytes()
    assert resources.bundled_topology("no-such-lab") is None


def test_the_default_matrix_names_only_bundled_topologies() -> None:
    spec = matrix.load_spec(resources.default_matrix_spec(), resources.topologies_dir())
    assert spec.scenarios and set(spec.scenarios) <= set(resources.topology_names())


def test_images_dir_override_brings_its_own_context_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(resources.ENV_IMAGES_DIR, str(tmp_path / "images"))
    assert resources.images_dir() == tmp_path / "images"
    assert resources.context_root() == tmp_path.resolve()


def test_hashes_do_not_depend_on_where_the_recipes_are(tmp_path: Path) -> None:
    """The installed layout, simulated: recipes under testbed/data/images, code beside them."""
    site = tmp_path / "site-packages"
    shutil.copytree(REPO / "images", site / "testbed/data/images", ignore=_JUNK)
    shutil.copytree(REPO / "testbed", site / "testbed", ignore=shutil.ignore_patterns("data", "__pycache__"),
                    dirs_exist_ok=True)
    moved = discover_images(site / "testbed/data/images", site)
    assert all_hashes(moved) == all_hashes(bundled_recipes())
    assert all_hashes(bundled_recipes()) == all_hashes(discover_images(REPO / "images"))


def test_plan_by_name_from_another_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["plan", "mx-routing"])
    assert res.exit_code == 0, res.output
    assert "mx-routing / broken" in res.output and "mx20" in res.output


# --------------------------------------------------------------- the built wheel


def test_the_built_package_holds_every_topology_and_image_recipe(built_package: Path) -> None:
    data = built_package / "testbed/data"
    assert not (data / "topologies").is_symlink() and not (data / "images").is_symlink()
    assert tree(data / "topologies") == tree(REPO / "topologies")
    assert tree(data / "images") == tree(REPO / "images")  # executable bits included
    assert tree(data / "exercises") == tree(REPO / "exercises")  # briefs, checks and the teachers' solutions
    assert tree(built_package / "testbed/templates") == tree(REPO / "testbed/templates")


def test_image_hashes_from_the_built_package_equal_the_checkout(built_package: Path) -> None:
    """Same paths, contents and executable bits, so the checkout's images stay current."""
    built = discover_images(built_package / "testbed/data/images", built_package)
    assert all_hashes(built) == all_hashes(bundled_recipes())


def test_plan_runs_from_the_built_package_alone(built_package: Path, tmp_path: Path) -> None:
    """No checkout on the path and a working directory of its own: the package is enough."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", resources.ENV_IMAGES_DIR)}
    env["PYTHONPATH"] = str(built_package)
    code = ("import sys, testbed; assert testbed.__file__.startswith(sys.argv[1]), testbed.__file__; "
            "from testbed.cli import main; sys.argv[1:] = ['plan', 'mx-routing']; main()")
    done = subprocess.run([sys.executable, "-c", code, str(built_package)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "mx-routing / broken" in done.stdout and "mx20" in done.stdout
    assert not (tmp_path / "runs").exists()  # planning writes no run directory

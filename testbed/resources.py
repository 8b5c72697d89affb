"""Where the bundled data is: topologies, the matrix spec, the exercises and the image recipes.

They are package data (``testbed/data/``), so an installed wheel is enough: in the
checkout ``testbed/data/topologies``, ``exercises`` and ``images`` are symlinks to the
top-level ``topologies/``, ``exercises/`` and ``images/`` (where people edit them), and the wheel
carries copies of what they point at. Every other module asks here; none works out
paths from ``__file__`` or the checkout root.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from .errors import TestbedError

ENV_IMAGES_DIR = "TESTBED_IMAGES_DIR"
TOPOLOGY_SUFFIX = ".yaml"


def package_dir() -> Path:
    """The imported ``testbed`` package's directory (the checkout's, or site-packages')."""
    root = files("testbed")
    # Docker builds read the recipes as plain files, so a zipped install cannot work.
    if not isinstance(root, Path):
        raise TestbedError(f"the testbed package is not on the file system ({root}); install it unzipped")
    return root


def data_dir() -> Path:
    return package_dir() / "data"


def topologies_dir() -> Path:
    """The bundled topologies (``topologies/`` in the checkout)."""
    return data_dir() / "topologies"


def default_matrix_spec() -> Path:
    """What ``testbed matrix`` runs without ``--spec``."""
    return topologies_dir() / "matrices" / "default.yaml"


def topology_names() -> list[str]:
    """The bundled topologies by name (``mx-routing``), sorted."""
    return sorted(p.stem for p in topologies_dir().glob(f"*{TOPOLOGY_SUFFIX}"))


def bundled_topology(name: str) -> Path | None:
    """``topologies/<name>.yaml`` if it is bundled, else None."""
    path = topologies_dir() / f"{name}{TOPOLOGY_SUFFIX}"
    return path if path.is_file() else None


def exercises_dir() -> Path:
    """The exercise packs (``exercises/<name>/exercise.yaml`` in the checkout)."""
    return data_dir() / "exercises"


def images_dir() -> Path:
    """The image recipes (``images/<name>/Dockerfile``); ``TESTBED_IMAGES_DIR`` overrides."""
    env = os.environ.get(ENV_IMAGES_DIR)
    return Path(env) if env else data_dir() / "images"


def context_root() -> Path:
    """Where an image's ``context.txt`` paths (``testbed/dnsserver/``) are found.

    The directory that holds the ``testbed`` package: the checkout's root, or
    site-packages for a wheel, so both give the same build context and content hash.
    An images directory named by ``TESTBED_IMAGES_DIR`` brings its own repository:
    its parent, as before there was package data.
    """
    env = os.environ.get(ENV_IMAGES_DIR)
    return Path(env).resolve().parent if env else package_dir().resolve().parent

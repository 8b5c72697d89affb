"""Image names, tags and suites, and what every image module reports with.

The image pipeline's modules (``recipes``, ``aptsources``, ``rootfs``, ``images``)
share these: the ``testbed/<name>:<suite>`` tags (another prefix with
``TESTBED_IMAGE_PREFIX``), the suites the builder knows, the errors, and the
progress callback builds stream their output to.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterable

from .adapters.registry import SUITES  # the adapters are the source
from .errors import TestbedError

IMAGE_PREFIX = "testbed"
# Another prefix keeps a test's or an experiment's images apart from everyone's
# testbed/* images on a shared engine. Dockerfiles still say FROM testbed/<parent>.
ENV_PREFIX = "TESTBED_IMAGE_PREFIX"

# Suites the builder also knows, for images that are not lab hosts: forky's
# docker.io is the current engine `testbed engine` runs nested.
EXTRA_BUILD_SUITES = ("forky",)
DEFAULT_SUITE = "bookworm"
DEBIAN_IMAGE = "debian"
# Lines of a failed build's output kept for its error message.
LOG_TAIL_LINES = 30

_PREFIX_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")

ProgressCallback = Callable[[str, str], None]
"""``progress(image_name, message)``: one call per status change or build-log line."""


class ImageError(TestbedError):
    """The image pipeline cannot do its job (setup problem or bad image recipe)."""


class DebootstrapUnavailable(ImageError):
    """debootstrap cannot run on this machine (no root, not installed, no mirror)."""


class ImageBuildError(ImageError):
    """A build ran and failed; carries the tail of its output for the user."""

    def __init__(self, image: str, suite: str, log_tail: Iterable[str], reason: str = "") -> None:
        self.image = image
        self.suite = suite
        self.log_tail = list(log_tail)
        self.reason = reason
        head = f"building {image_tag(image, suite)} failed" + (f": {reason}" if reason else "")
        body = "\n".join(self.log_tail)
        super().__init__(f"{head}\n--- last {len(self.log_tail)} lines of output ---\n{body}")


# --------------------------------------------------------------------------- names


def image_prefix() -> str:
    """``testbed``, or ``TESTBED_IMAGE_PREFIX`` (read each time: tests set it per test)."""
    prefix = os.environ.get(ENV_PREFIX) or IMAGE_PREFIX
    if not _PREFIX_RE.match(prefix):
        raise ImageError(f"{ENV_PREFIX}={prefix!r}: use lower-case letters, digits and single . _ - (e.g. testbed-try)")
    return prefix


def image_tag(name: str, suite: str) -> str:
    """``testbed/<name>:<suite>``: the suite is the tag so both suites coexist."""
    return f"{image_prefix()}/{name}:{suite}"


def check_suite(suite: str) -> None:
    """Raise ImageError for a suite the builder does not know."""
    if suite not in (*SUITES, *EXTRA_BUILD_SUITES):
        raise ImageError(f"unknown suite {suite!r}; supported: {', '.join((*SUITES, *EXTRA_BUILD_SUITES))}")


# ------------------------------------------------------------------------ progress


def relay_output(name: str, text: str, tail: deque[str], progress: ProgressCallback) -> None:
    """Each non-blank line of a build's output to ``progress``, and to ``tail`` for its error."""
    for line in text.splitlines():
        if line.strip():
            tail.append(line.rstrip())
            progress(name, line.rstrip())


"""What ``testbed/debian`` is made of, whichever source it comes from (pure).

debootstrap installs the packages and ``testbed.rootfs`` writes the files and
prunes the rootfs; on a pulled ``debian:<suite>`` a small Dockerfile does the same
with apt. Both are hashed (``debian_recipe_data``, ``registry_recipe_data``) so a
change here rebuilds the image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .imagesource import BaseSource

# Everything a lab host needs for network work is in the rootfs itself, so routers
# can run testbed/base without any install step. dig comes from bind9-dnsutils: in
# trixie "dnsutils" is only a virtual package, which debootstrap cannot resolve.
DEBOOTSTRAP_PACKAGES = (
    "bind9-dnsutils",
    "ca-certificates",
    "iproute2",
    "iptables",
    "iputils-ping",
    "netcat-openbsd",
    "procps",
    "tcpdump",
)

# Bump when the rootfs recipe changes in code (not in the data below, which is
# hashed anyway), so existing testbed/debian images are rebuilt.
DEBIAN_RECIPE_VERSION = "1"
# The same for the build on top of a pulled debian image (its Dockerfile is hashed).
REGISTRY_RECIPE_VERSION = "1"

# Files written into the rootfs after debootstrap: (content, mode).
ROOTFS_FILES: Mapping[str, tuple[str, int]] = {
    # Small, predictable installs in every later `RUN apt-get install`; no .deb or
    # pkgcache.bin left behind in image layers (the same idea as Docker's debian images).
    "etc/apt/apt.conf.d/90testbed": (
        'APT::Install-Recommends "false";\n'
        'APT::Install-Suggests "false";\n'
        'APT::Keep-Downloaded-Packages "false";\n'
        'Acquire::Languages "none";\n'
        'Acquire::Retries "3";\n'
        'Dir::Cache::pkgcache "";\n'
        'Dir::Cache::srcpkgcache "";\n',
        0o644,
    ),
    # Later package installs skip docs, man pages and translations as well.
    "etc/dpkg/dpkg.cfg.d/90testbed-nodoc": (
        "path-exclude=/usr/share/doc/*\n"
        "path-exclude=/usr/share/man/*\n"
        "path-exclude=/usr/share/info/*\n"
        "path-exclude=/usr/share/locale/*\n"
        "path-exclude=/usr/share/lintian/*\n",
        0o644,
    ),
    # Package scripts must not start daemons inside `docker build` containers;
    # the lab starts its services itself (tb-init / adapters), not via invoke-rc.d.
    "usr/sbin/policy-rc.d": ("#!/bin/sh\n# testbed: no daemons started by package scripts\nexit 101\n", 0o755),
    # Docker bind-mounts its own copies at run time; the build host's must not leak in.
    "etc/resolv.conf": ("", 0o644),
    "etc/hostname": ("", 0o644),
}
# Files the engine provides in every container (and build step) itself: a pulled
# image gets none of them from us.
ENGINE_MANAGED_FILES = frozenset({"etc/resolv.conf", "etc/hostname"})

# Removed from the rootfs before import (globs relative to the rootfs).
ROOTFS_PRUNE = (
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/log/*.log",
    "var/log/apt/*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "usr/share/lintian/*",
)

DEBIAN_IMAGE_CHANGES = ('CMD ["/bin/bash"]', "ENV LANG=C.UTF-8")


def debian_recipe_data(suite: str) -> dict[str, Any]:
    """Everything that defines the rootfs image, except the mirror (same packages anywhere)."""
    return {
        "recipe_version": DEBIAN_RECIPE_VERSION,
        "suite": suite,
        "variant": "minbase",
        "include": sorted(DEBOOTSTRAP_PACKAGES),
        "files": {k: [v[0], oct(v[1])] for k, v in sorted(ROOTFS_FILES.items())},
        "prune": list(ROOTFS_PRUNE),
        "changes": list(DEBIAN_IMAGE_CHANGES),
    }


def registry_files() -> dict[str, tuple[str, int]]:
    """The rootfs files a pulled image gets (the engine provides the rest itself)."""
    return {k: v for k, v in sorted(ROOTFS_FILES.items()) if k not in ENGINE_MANAGED_FILES}


def registry_dockerfile(pulled_id: str) -> str:
    """The build on top of a pulled debian image: what debootstrap's rootfs has, via apt.

    FROM the image id, not the tag: the build uses exactly the image that was hashed,
    even if the tag moves meanwhile. Packages come from the image's own apt sources.
    """
    prune = " ".join(f"/{pattern}" for pattern in ROOTFS_PRUNE)
    return "\n".join([
        f"FROM {pulled_id}",
        "COPY rootfs/ /",
        "RUN apt-get update \\",
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y " + " ".join(sorted(DEBOOTSTRAP_PACKAGES)) + " \\",
        f" && rm -rf {prune}",
        *DEBIAN_IMAGE_CHANGES,
        "",
    ])


def registry_recipe_data(suite: str, source: BaseSource) -> dict[str, Any]:
    """Everything that defines the debian image made from a pull, the pulled image's id included."""
    return {
        "recipe_version": REGISTRY_RECIPE_VERSION,
        "suite": suite,
        "reference": source.reference,
        "pulled_id": source.pulled_id,
        "dockerfile": registry_dockerfile(source.pulled_id or ""),
        "files": {k: [v[0], oct(v[1])] for k, v in registry_files().items()},
    }


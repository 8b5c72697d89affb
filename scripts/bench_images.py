#!/usr/bin/env python3
"""Benchmark the image pipeline: cold build per image, no-op ensure, sizes, smoke checks.

    sudo .venv/bin/python scripts/bench_images.py --suite bookworm --suite trixie --clean --smoke

--clean deletes the suite's testbed/<image>:<suite> tags first (children first, nothing
outside the testbed/ prefix), so every image really is built from scratch. Without it,
images already present are reported as "cached". Smoke checks run each image once with
no network (create + start, never `run`, which could try to pull) and remove the container.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import docker
import docker.errors

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed import imagenames as N  # noqa: E402
from testbed import images as I  # noqa: E402
from testbed import recipes as R  # noqa: E402

NOOP_TARGET_S = 5.0

SMOKE: dict[str, list[str]] = {
    "debian": ["sh", "-c", "cat /etc/debian_version && apt-config dump | grep 'Install-Recommends \"false\"'"],
    "base": ["sh", "-c", "test -x /usr/local/sbin/tb-init && test -d /etc/testbed && test -d /var/log/testbed"
             " && ip -V && ss -V && dig -v && ping -V && tcpdump --version 2>&1 | head -1 && iptables -V"
             " && nc -h 2>&1 | head -1 && ps --version"],
    "dns": ["python3", "-c", "import sys, dnslib, testbed.dnsserver;"
            " print('dnslib', dnslib.version, 'python', sys.version.split()[0])"],
    "postfix": ["sh", "-c", "postconf mail_version && ! postconf -F '*/*/chroot' | grep -v '= n$'"],
    "client": ["sh", "-c", "swaks --version | head -1 && perl -MIO::Socket::INET6 -MNet::DNS"
               " -e 'print qq(Net::DNS $Net::DNS::VERSION\\n)' && python3 --version"],
}


def clean(client: docker.DockerClient, order: list[str], suite: str) -> None:
    """Remove every testbed build of the suite (suite tags and cache tags), children first."""
    for name in reversed(order):
        for build in I.builds_of(client, name, suite):
            for ref in I._testbed_tags(build) or [build["Id"]]:
                try:
                    client.api.remove_image(ref)
                    print(f"removed {ref}")
                except docker.errors.ImageNotFound:
                    pass
                except docker.errors.APIError as exc:  # in use by someone's container
                    print(f"kept {ref}: {exc.explanation}")


def cold_builds(order: list[str], suite: str, images_dir: Path | None, verbose: bool) -> dict[str, dict]:
    """ensure_images one image at a time (parents first) so each build is timed alone."""
    results = {}
    for name in order:
        built: list[str] = []

        def progress(image: str, msg: str, built: list[str] = built) -> None:
            if msg.startswith("building "):
                built.append(image)
            if verbose or msg.startswith(("building ", "built ", "mirror ")):
                print(f"  [{image}] {msg}", flush=True)

        started = time.monotonic()
        I.ensure_images([name], suite, images_dir=images_dir, progress=progress)
        results[name] = {"seconds": round(time.monotonic() - started, 1), "built": name in built}
    return results


def noop_runs(suite: str, images_dir: Path | None, runs: int) -> list[float]:
    """Full ensure_images(None) calls, client creation included, as the CLI would do them."""
    times = []
    for _ in range(runs):
        started = time.monotonic()
        I.ensure_images(None, suite, images_dir=images_dir)
        times.append(round(time.monotonic() - started, 3))
    return times


def smoke(client: docker.DockerClient, name: str, suite: str) -> tuple[bool, str]:
    """Run the image's check command with no network; the container is always removed."""
    cmd = SMOKE.get(name, ["true"])
    container = client.containers.create(N.image_tag(name, suite), cmd, network_mode="none",
                                         labels={"testbed.bench": "smoke"})
    try:
        container.start()
        rc = container.wait(timeout=120)["StatusCode"]
        out = container.logs().decode(errors="replace").strip()
    finally:
        container.remove(force=True)
    return rc == 0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", action="append", choices=N.SUITES, help="repeatable; default bookworm")
    ap.add_argument("--clean", action="store_true", help="delete the suite's testbed/* images first")
    ap.add_argument("--noop-runs", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="run a check command in every image")
    ap.add_argument("--images-dir", type=Path, help="another images/ directory (default: the bundled recipes)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("-v", "--verbose", action="store_true", help="stream full build logs")
    args = ap.parse_args()

    client = I.docker_client()
    order = R.resolve_order(R.discover_images(args.images_dir) if args.images_dir else R.bundled_recipes())
    report: dict[str, dict] = {}
    ok = True
    for suite in args.suite or [N.DEFAULT_SUITE]:
        print(f"== {suite}")
        if args.clean:
            clean(client, order, suite)
        builds = cold_builds(order, suite, args.images_dir, args.verbose)
        noop = noop_runs(suite, args.images_dir, args.noop_runs)
        sizes = {n: client.api.inspect_image(N.image_tag(n, suite))["Size"] for n in order}
        smokes = {n: smoke(client, n, suite) for n in order} if args.smoke else {}
        report[suite] = {"builds": builds, "noop_seconds": noop, "sizes": sizes,
                         "smoke": {n: {"ok": s[0], "output": s[1]} for n, s in smokes.items()}}
        print(f"{'image':10} {'build s':>8} {'':6} {'size MB':>8}  smoke")
        for n in order:
            b = builds[n]
            state = "" if b["built"] else "cached"
            smk = ("ok" if smokes[n][0] else "FAIL") + " | " + smokes[n][1].replace("\n", " | ") if n in smokes else ""
            print(f"{n:10} {b['seconds']:8.1f} {state:6} {sizes[n] / 1e6:8.0f}  {smk}")
        worst = max(noop)
        print(f"no-op ensure_images (all images): {noop} s; target <= {NOOP_TARGET_S} s: "
              f"{'met' if worst <= NOOP_TARGET_S else 'MISSED'}")
        ok &= worst <= NOOP_TARGET_S and all(s[0] for s in smokes.values())
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except N.ImageError as exc:  # build failures already carry the log tail
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

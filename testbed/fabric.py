"""The Docker layer: networks, containers, exec. Nothing else in the package talks to Docker.

Every object created here carries the run's labels, and ``teardown`` removes
objects by label only, so a crashed or interrupted run is cleaned up the same
way as a finished one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import ipaddress
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool, LogConfig, Mount

from . import capture
from .adapters import RenderedFile
from .errors import CaptureFailed, DockerUnavailable, HostDown, LabError
from .labapi import ExecResult
from .plan import (
    ENDPOINT_SYSCTLS,
    LABEL_ADDRESSES,
    LABEL_HANDLE,
    LABEL_HOST,
    LABEL_KIND,
    LABEL_RUN,
    EngineCaps,
    HostPlan,
    IPAddress,
    IPNetwork,
    LabPlan,
    RoutedPath,
    SegmentPlan,
    network_options,
    handle_base,
    next_handle,
    routed_paths_to_dns,
)

READY_LINE = "testbed: ready"  # printed by tb-init once network and service are up
READY_TIMEOUT_S = 90.0
FOLLOW_TIMEOUT_S = 7 * 86400  # `testbed logs --follow`: as long as a lab may live
# Every lab container is bounded: a runaway daemon (or a fork bomb in a student's
# shell) must not take the machine, which other labs and users share. The
# largest lab host (Dovecot, or the DNS server with thousands of rules) stays
# far below these.
CONTAINER_MEMORY = "512m"
CONTAINER_PIDS = 512

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def connect() -> docker.DockerClient:
    """A client for the local engine, or a clear error saying why there is none."""
    try:
        client = docker.from_env(timeout=120, max_pool_size=32)
        client.ping()
    except docker.errors.DockerException as exc:
        raise DockerUnavailable(
            "cannot reach the Docker engine "
            f"({exc}). Start Docker and make sure this user may use its socket "
            "(member of the 'docker' group, or DOCKER_HOST set)."
        ) from None
    return client


def engine_caps(client: docker.DockerClient) -> EngineCaps:
    return EngineCaps.parse(client.api.api_version)


def engine_version(client: docker.DockerClient) -> str:
    try:
        return str(client.version().get("Version", "?"))
    except docker.errors.DockerException:
        return "?"


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def engine_info(client: docker.DockerClient) -> dict:
    try:
        return dict(client.info())
    except docker.errors.DockerException:
        return {}


def run_once(client: docker.DockerClient, image: str, script: str, labels: dict[str, str], **host_options) -> str:
    """Run ``sh -c script`` in a throwaway labelled container; its output (the container is removed)."""
    api = client.api
    created = api.create_container(image, command=["sh", "-c", script], entrypoint=[], labels=labels,
                                   host_config=api.create_host_config(**host_options))
    try:
        api.start(created["Id"])
        api.wait(created["Id"], timeout=60)
        return api.logs(created["Id"], stdout=True, stderr=False).decode("utf-8", "replace")
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_container(created["Id"], force=True)


def start_probe_container(client: docker.DockerClient, image: str, name: str, labels: dict[str, str],
                          interfaces: list[tuple[str, IPAddress, IPAddress]], router: bool = False) -> None:
    """A sleeping container with fixed addresses on each (network, IPv4, IPv6); a router forwards."""
    api = client.api
    (first, v4, v6), *rest = interfaces
    sysctls = {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"} if router else {}
    sysctls["net.ipv6.conf.all.accept_dad"] = "0"
    sysctls["net.ipv6.conf.default.accept_dad"] = "0"
    created = api.create_container(
        image, command=["sleep", "infinity"], entrypoint=[], name=name, labels=labels, detach=True,
        host_config=api.create_host_config(init=True, cap_add=["NET_ADMIN"], sysctls=sysctls, network_mode=first),
        networking_config=api.create_networking_config(
            {first: api.create_endpoint_config(ipv4_address=str(v4), ipv6_address=str(v6))}),
    )
    api.start(created["Id"])
    for network, v4, v6 in rest:
        api.connect_container_to_network(created["Id"], network, ipv4_address=str(v4), ipv6_address=str(v6))


def docker_subnets(client: docker.DockerClient) -> list[tuple[IPNetwork, str]]:
    """Subnets of every existing Docker network, with the network's name."""
    out: list[tuple[IPNetwork, str]] = []
    for net in client.api.networks():
        for cfg in (net.get("IPAM") or {}).get("Config") or []:
            try:
                out.append((ipaddress.ip_network(cfg["Subnet"], strict=False), net.get("Name", "?")))
            except (KeyError, ValueError):
                continue
    return out


def _lock_path(client: docker.DockerClient) -> Path:
    """One lock file per engine, shared by every user of this machine (hence /tmp, mode 0666)."""
    engine = hashlib.sha256(str(client.api.base_url).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"testbed-subnets-{engine}.lock"


@contextlib.contextmanager
def subnet_lock(client: docker.DockerClient) -> Iterator[None]:
    """Machine-wide: between reading the engine's subnets and creating networks on free ones.

    Labs from several processes (shells, a classroom, pytest-xdist) otherwise
    pick the same free subnets and all but one fail with "Pool overlaps". flock
    is per open file, so threads of one process exclude each other too; the
    kernel releases it if the holder dies.
    """
    path = _lock_path(client)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)  # whoever created it first, every user may take it
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RunObjects:
    """What `testbed ps` shows of a run that still owns Docker objects."""

    labels: dict[str, str]
    containers: int = 0
    created: float | None = None  # the oldest container's creation (seconds since the epoch)


def list_runs(client: docker.DockerClient) -> dict[str, RunObjects]:
    """Runs that still own Docker objects: run id -> labels of one of its objects, containers, age."""
    runs: dict[str, RunObjects] = {}
    for c in client.api.containers(all=True, filters={"label": LABEL_RUN}):
        labels = c.get("Labels") or {}
        run_id = labels.get(LABEL_RUN, "?")
        seen = runs.get(run_id, RunObjects(labels))
        created = min(filter(None, (seen.created, c.get("Created"))), default=None)
        runs[run_id] = RunObjects(seen.labels, seen.containers + 1, created)
    for n in client.api.networks(filters={"label": LABEL_RUN}):
        labels = n.get("Labels") or {}
        runs.setdefault(labels.get(LABEL_RUN, "?"), RunObjects(labels))
    for v in client.api.volumes(filters={"label": LABEL_RUN}).get("Volumes") or []:
        labels = v.get("Labels") or {}
        runs.setdefault(labels.get(LABEL_RUN, "?"), RunObjects(labels))
    return runs


def teardown(client: docker.DockerClient, run_id: str | None = None, scope: Iterable[str] = ()) -> tuple[int, int]:
    """Remove the containers, then the networks and volumes, of one run (or of every run within ``scope``).

    ``scope``: extra label filters (``owner.scope_labels``), all of which must match.
    Every object is tried; what the engine refuses to remove is named in one LabError at the end.
    """
    return remove_objects(client, [f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN, *scope])


def remove_objects(client: docker.DockerClient, selector: list[str], networks: bool = True) -> tuple[int, int]:
    """Remove the containers, then (with ``networks``) the networks, then the volumes with all these labels.

    (containers, networks) removed; what the engine refuses is named in one LabError once all were tried.
    """
    refused: list[str] = []

    def removing(what: str, remove: Callable[[], None]) -> None:
        try:
            remove()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            refused.append(f"{what}: {exc.explanation or exc}")

    containers = client.api.containers(all=True, filters={"label": selector})
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda c: removing(f"container {c['Names'][0].lstrip('/')}",
                                         lambda: client.api.remove_container(c["Id"], force=True, v=True)),
                      containers))
    nets = client.api.networks(filters={"label": selector}) if networks else []
    # Side by side, like the containers: each removal waits on the engine tearing a bridge down.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: removing(f"network {n['Name']}", lambda: client.api.remove_network(n["Id"])), nets))
    volumes = client.api.volumes(filters={"label": selector}).get("Volumes") or []
    # Volumes only once their containers are gone; each removal is independent of the others.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda v: removing(f"volume {v['Name']}",
                                         lambda: client.api.remove_volume(v["Name"], force=True)), volumes))
    if refused:
        # Seen on engine 20.10: a network whose endpoint count never went back to zero ("has active
        # endpoints" with no container on it, and none in the engine's store); only a restart of the
        # engine frees it.
        raise LabError("the engine refused to remove:\n  " + "\n  ".join(refused))
    return len(containers), len(nets)


def create_network(client: docker.DockerClient, seg: SegmentPlan, options: dict[str, str],
                   labels: dict[str, str]) -> None:
    """One segment's bridge network, read back: stop if the engine built something else."""
    pools = [IPAMPool(subnet=str(p.subnet), gateway=str(p.gateway), iprange=str(p.ip_range))
             for p in seg.address_pools()]
    try:
        net = client.networks.create(
            seg.network,
            driver="bridge",
            enable_ipv6=seg.subnet_v6 is not None,
            ipam=IPAMConfig(pool_configs=pools),
            options=options,
            labels=labels,
        )
    except docker.errors.APIError as exc:
        raise LabError(f"cannot create network {seg.network} for segment {seg.name}: {exc.explanation}") from None
    net.reload()
    configured = {
        ipaddress.ip_network(c["Subnet"], strict=False) for c in (net.attrs.get("IPAM") or {}).get("Config") or []
    }
    wanted = set(seg.subnets)
    if configured != wanted:
        raise LabError(
            f"the engine created segment {seg.name} with subnets {sorted(map(str, configured))}, "
            f"not {sorted(map(str, wanted))}; this engine cannot build the requested network"
        )


def exec_in(client: docker.DockerClient, container: str, command: str, timeout: float = 60) -> ExecResult:
    """`sh -c command` in a container, bounded by `timeout` (coreutils) inside it."""
    api = client.api
    try:
        ex = api.exec_create(container, ["timeout", str(int(timeout)), "sh", "-c", command])
        out, err = api.exec_start(ex["Id"], demux=True)
        rc = api.exec_inspect(ex["Id"])["ExitCode"]
    except docker.errors.APIError as exc:
        return ExecResult(125, "", str(exc.explanation or exc))
    return ExecResult(
        rc if rc is not None else 125,
        (out or b"").decode("utf-8", "replace"),
        (err or b"").decode("utf-8", "replace"),
    )


def lab_containers(client: docker.DockerClient, run_id: str) -> list[dict]:
    """The containers of one run, with their labels."""
    return client.api.containers(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})


def _lines(chunks: Iterable[bytes]) -> Iterable[str]:
    """Whole lines from a stream of log chunks."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", "replace").strip()
    if buffer:
        yield buffer.decode("utf-8", "replace").strip()


def _tar(files: Iterable[RenderedFile]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs: set[str] = set()
        for f in files:
            parts = f.path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            data = f.content.encode()
            info = tarfile.TarInfo(f.path.strip("/"))
            info.size = len(data)
            info.mode = f.mode
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Lab:
    """One running lab: its networks and containers, addressed by host name."""

    def __init__(
        self,
        client: docker.DockerClient,
        plan: LabPlan,
        progress: Progress = _quiet,
        images: dict[tuple[str, str], str] | None = None,
    ):
        self.client = client
        self.plan = plan
        self.progress = progress
        # Image ids from the build step: another checkout may move a tag meanwhile.
        self.images = images or {}
        # Log streams block until a line arrives; their own client bounds the wait.
        self._streams = docker.from_env(timeout=READY_TIMEOUT_S, max_pool_size=32)
        self._cancelled = threading.Event()

    # --- bring-up -------------------------------------------------------------

    def up(self, files: dict[str, list[RenderedFile]], data_dirs: dict[str, tuple[str, ...]] | None = None) -> None:
        """Create networks, then every container in parallel; return when all are ready.

        ``data_dirs`` are mounted from labelled Docker volumes (queues, mailboxes).
        """
        hosts = list(self.plan.hosts.values())
        data_dirs = data_dirs or {}
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            futures = [pool.submit(self._create_host, h, files[h.name], data_dirs.get(h.name, ())) for h in hosts]
            for fut in futures:
                try:
                    fut.result()
                except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
                    self._cancelled.set()
                    errors.append(exc)
        if errors:
            raise errors[0]
        self.check_routed_paths()

    def create_networks(self, replan: Callable[[list[IPNetwork]], LabPlan]) -> None:
        """Create the lab's networks on subnets no other process holds; before ``up``.

        Under the machine-wide subnet lock, the planned subnets are checked
        against the engine's networks again: when another process took one
        since this lab was planned, ``replan`` (given every subnet in use)
        moves the lab to free ones before anything is rendered or created.
        """
        with subnet_lock(self.client):
            self.check_cancel()
            used = [n for n, _ in docker_subnets(self.client)]
            planned = [n for seg in self.plan.segments.values() for n in seg.subnets]
            taken = [n for n in planned if any(n.version == u.version and n.overlaps(u) for u in used)]
            if taken:
                self.plan = replan(used)
                self.progress(f"{', '.join(map(str, taken))} taken meanwhile; moved to other subnets")
            # Under the same lock: the handle is unique among the labs on the engine.
            handles = (objs.labels.get(LABEL_HANDLE, "") for objs in list_runs(self.client).values())
            self.plan.labels[LABEL_HANDLE] = next_handle(handle_base(self.plan.name, self.plan.labels), handles)
            segments = list(self.plan.segments.values())
            # Side by side: the subnets are already known free (checked above, under the
            # lock), so the networks do not depend on each other.
            with ThreadPoolExecutor(max_workers=max(1, len(segments))) as pool:
                for fut in [pool.submit(self._create_network, seg) for seg in segments]:
                    fut.result()

    def check_routed_paths(self) -> None:
        """Ping the DNS server through each host's router; stop with the reason if one fails."""
        paths = routed_paths_to_dns(self.plan)

        def ping(path: RoutedPath) -> tuple[RoutedPath, ExecResult]:
            # One echo answered is enough; only when it is not, the three-probe check
            # decides (ping -c 3 waits for all three, 0.4 s even on a working path).
            probe = f"ping -c 1 -W 1 -q {path.address} >/dev/null || ping -c 3 -i 0.2 -W 2 -q {path.address}"
            return path, self.exec(path.host, probe, timeout=15)

        with ThreadPoolExecutor(max_workers=max(1, len(paths))) as pool:
            failed = [(p, res) for p, res in pool.map(ping, paths) if not res.ok]
        if failed:
            lines = [f"{p.host} cannot reach the lab DNS server {p.target} at {p.address} "
                     f"({'IPv4' if p.family == 'ipv4' else 'IPv6'}) through its router {p.via}"
                     for p, _ in failed]
            raise LabError(
                "traffic routed between the lab's networks does not get through:\n  " + "\n  ".join(lines)
                + "\nThe engine drops forwarded packets between its bridges. `testbed doctor` "
                "inspects this engine's firewall and says what can be done."
            )
        if paths:
            self.progress(f"{len(paths)} routed paths to the lab DNS server answer")

    def cancel(self) -> None:
        """Stop creating objects (Ctrl-C): threads finish their current call and return."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check_cancel(self) -> None:
        if self._cancelled.is_set():
            raise LabError("bring-up cancelled")

    def _create_network(self, seg: SegmentPlan) -> None:
        self.check_cancel()
        options = network_options(self.plan.segments, seg.name, self.plan.caps)
        create_network(self.client, seg, options, self.plan.labels)
        wanted = sorted(map(str, seg.subnets))
        self.progress(f"network {seg.network} ({seg.family}: {', '.join(wanted)})")

    def _endpoint(self, iface, sysctls: str | None = None) -> dict:
        return self.client.api.create_endpoint_config(
            ipv4_address=str(iface.docker_ipv4) if iface.docker_ipv4 else None,
            ipv6_address=str(iface.docker_ipv6) if iface.docker_ipv6 else None,
            # Per-interface sysctls (router advertisements, temporary addresses): API 1.46+.
            driver_opt={ENDPOINT_SYSCTLS: sysctls} if sysctls else None,
        )

    def _create_host(self, host: HostPlan, files: list[RenderedFile], data_dirs: tuple[str, ...]) -> None:
        try:
            self._create_container(host, files, data_dirs)
        except docker.errors.DockerException as exc:
            raise LabError(f"cannot bring up {host.name}: {getattr(exc, 'explanation', None) or exc}") from None
        self.wait_ready(host.name)
        self.progress(f"{host.name} up ({host.software}, {host.stack})")

    def _create_container(self, host: HostPlan, files: list[RenderedFile], data_dirs: tuple[str, ...]) -> None:
        self.check_cancel()
        mounts = []
        for i, path in enumerate(data_dirs):
            # An empty named volume is filled from the image's directory on first mount.
            volume = self.client.api.create_volume(
                name=f"{host.container}-{i}", labels={**self.plan.labels, LABEL_HOST: host.name}
            )
            mounts.append(Mount(target=path, source=volume["Name"], type="volume"))
        api = self.client.api
        plan = self.plan
        first, *rest = host.interfaces
        attach_now = host.interfaces if plan.caps.multi_network_create else (first,)
        sysctls = host.endpoint_sysctls(plan.caps)
        networking = api.create_networking_config(
            {plan.segments[i.segment].network: self._endpoint(i, sysctls if i is first else None) for i in attach_now}
        )
        host_config = api.create_host_config(
            init=True,
            mem_limit=CONTAINER_MEMORY,
            pids_limit=CONTAINER_PIDS,
            cap_add=["NET_ADMIN"],
            sysctls=host.engine_sysctls(plan.caps),
            tmpfs={"/run/testbed": "size=1m"},
            mounts=mounts,
            network_mode=plan.segments[first.segment].network,
        )
        try:
            created = api.create_container(
                image=self._image(host),
                name=host.container,
                hostname=host.fqdn,
                labels={
                    **plan.labels,
                    LABEL_HOST: host.name,
                    LABEL_KIND: host.kind,
                    LABEL_ADDRESSES: ",".join(map(str, host.addresses())),
                },
                host_config=host_config,
                networking_config=networking,
                detach=True,
            )
        except docker.errors.ImageNotFound:
            raise LabError(f"image testbed/{host.image}:{host.suite} is missing; run `testbed images --build`") from None
        cid = created["Id"]
        api.put_archive(cid, "/", _tar(files))
        self.check_cancel()
        api.start(cid)
        if not plan.caps.multi_network_create:
            for iface in rest:
                self.check_cancel()
                net = plan.segments[iface.segment].network
                api.connect_container_to_network(
                    cid,
                    net,
                    ipv4_address=str(iface.docker_ipv4) if iface.docker_ipv4 else None,
                    ipv6_address=str(iface.docker_ipv6) if iface.docker_ipv6 else None,
                )

    # --- packet capture ---------------------------------------------------------------

    @property
    def capture_container(self) -> str:
        # A "." is not allowed in a host name, so no lab host can take this name.
        return f"tb-{self.plan.run_id}.capture"

    def _image(self, host: HostPlan) -> str:
        """The image id the build step returned for this host (or its tag, when not built in this process)."""
        return self.images.get((host.suite, host.image), f"testbed/{host.image}:{host.suite}")

    def _create_sidecar(self, name: str, command: list[str], kind: str, **host_options: Any) -> str:
        """A capture sidecar (not started): the DNS host's image, in the engine's network namespace
        with NET_RAW and NET_ADMIN to open the segments' bridges, bounded and labelled like a host."""
        api = self.client.api
        dns = self.plan.hosts[self.plan.dns_server]
        try:
            return api.create_container(
                image=self._image(dns),
                name=name,
                entrypoint=[],
                command=command,
                labels={**self.plan.labels, LABEL_KIND: kind},
                host_config=api.create_host_config(
                    init=True, network_mode="host", cap_add=["NET_RAW", "NET_ADMIN"],
                    mem_limit=CONTAINER_MEMORY, pids_limit=CONTAINER_PIDS, **host_options,
                ),
                detach=True,
            )["Id"]
        except docker.errors.ImageNotFound:
            raise LabError(f"image testbed/{dns.image}:{dns.suite} is missing; run `testbed images --build`") from None

    def start_capture(self) -> None:
        """The capture sidecar (capture.py): a tcpdump per segment bridge; return once all listen."""
        self.check_cancel()
        script = capture.sidecar_script(capture.segment_captures(self.plan))
        try:
            cid = self._create_sidecar(self.capture_container, ["sh", "-c", script], "capture")
            self.client.api.start(cid)
            for line in _lines(self._streams.api.logs(cid, stream=True, follow=True)):
                if line == capture.READY_LINE:
                    self.progress(f"capturing on {len(self.plan.segments)} segments")
                    return
        except (docker.errors.DockerException, OSError) as exc:
            raise LabError(f"cannot start the packet capture: {getattr(exc, 'explanation', None) or exc}") from None
        raise LabError(f"the packet capture did not start:\n{self._capture_log()}")

    def _capture_log(self) -> str:
        try:
            return self.client.api.logs(self.capture_container, tail=30).decode("utf-8", "replace").strip()
        except docker.errors.APIError as exc:
            return str(exc.explanation or exc)

    def collect_captures(self, dest: Path) -> list[capture.CaptureFile]:
        """Stop every tcpdump (each closes its file) and copy the captures into ``dest``/captures."""
        api = self.client.api
        name = self.capture_container
        try:
            api.inspect_container(name)
        except docker.errors.NotFound:
            return []
        with contextlib.suppress(docker.errors.APIError):
            ex = api.exec_create(name, ["sh", "-c", capture.STOP_COMMAND])
            api.exec_start(ex["Id"])
        try:
            api.wait(name, timeout=20)
            stream, _ = api.get_archive(name, capture.CAPTURE_DIR)
            archive = tarfile.open(fileobj=io.BytesIO(b"".join(stream)))
        except (docker.errors.DockerException, OSError, tarfile.TarError) as exc:
            raise LabError(f"cannot copy the packet captures: {getattr(exc, 'explanation', None) or exc}") from None
        files = {Path(m.name).name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}
        # Its work is done: a lab kept for inspection (--keep) holds its hosts only.
        with contextlib.suppress(docker.errors.APIError):
            api.remove_container(name, force=True)
        out = []
        (dest / "captures").mkdir(parents=True, exist_ok=True)
        for seg in capture.segment_captures(self.plan):
            data = files.get(Path(seg.sidecar_path).name)
            if data is None:
                continue
            (dest / seg.file).write_bytes(data)
            counts = capture.tcpdump_counts(files.get(Path(seg.sidecar_err).name, b"").decode("utf-8", "replace"))
            out.append(capture.CaptureFile(seg.segment, seg.family, seg.file, len(data), **counts))
        return out

    def live_capture(self, segment: str, bpf: str | None = None, count: int | None = None, pcap: bool = False,
                     on_message: Progress = _quiet) -> LiveCapture:
        """`testbed capture`: a sidecar with a tcpdump on one segment's bridge, its output streamed back.

        ``bpf`` is ANDed with the lab filter; ``on_message`` gets tcpdump's
        standard error ("listening on ...", the closing counts) line by line,
        never mixed into the stream. The caller closes the returned capture
        (it is a context manager), which removes the sidecar.
        """
        seg = self.plan.segments[segment]
        argv = capture.live_command(seg.bridge, capture.live_filter(self.plan, bpf), count, pcap)
        # Unique: several `testbed capture` may run on one lab, beside the run's own capture sidecar.
        name = f"{self.capture_container}-{segment}-{secrets.token_hex(3)}"
        try:
            # The bytes go to the attached client only: a log driver would store (and the
            # json-file driver mangle) binary pcap data nobody reads.
            cid = self._create_sidecar(name, argv, capture.LIVE_KIND, log_config=LogConfig(type=LogConfig.types.NONE))
        except docker.errors.DockerException as exc:
            raise LabError(f"cannot start a capture on {segment}: {getattr(exc, 'explanation', None) or exc}") from None
        live = LiveCapture(self.client, cid, segment, on_message)
        try:
            live.start()
        except BaseException:
            live.close()
            raise
        return live

    # --- readiness, exec, files -------------------------------------------------

    def wait_ready(self, host: str, boots_before: int = 0) -> None:
        """Wait for tb-init's "testbed: ready" line of this boot (it checks the service itself).

        Following the container's log costs the engine nothing, unlike polling
        with exec; the line is counted because a restarted container's log
        still holds the earlier boots' lines.
        """
        self.check_cancel()
        seen = 0
        try:
            for line in _lines(self._streams.api.logs(self.container(host), stream=True, follow=True)):
                if line == READY_LINE:
                    seen += 1
                    if seen > boots_before:
                        return
                elif line.startswith("testbed: ") and line.endswith(("failed", "never appeared", "60 s")):
                    raise LabError(f"{host}: {line[len('testbed: '):]}\n{self.container_log(host, tail=30)}")
        except (docker.errors.DockerException, OSError) as exc:  # read timeout, engine gone
            raise LabError(f"{host} not ready after {READY_TIMEOUT_S:.0f} s ({exc}):\n{self.container_log(host, tail=30)}") from None
        raise LabError(f"{host} stopped while starting:\n{self.container_log(host, tail=30)}")

    def boots(self, host: str) -> int:
        """How many times tb-init has reported ready in this container."""
        return sum(1 for line in self.container_log(host).splitlines() if line == READY_LINE)

    def container(self, host: str) -> str:
        return self.plan.hosts[host].container

    def running(self, host: str) -> bool:
        try:
            return bool(self.client.api.inspect_container(self.container(host))["State"]["Running"])
        except docker.errors.NotFound:
            return False

    def exec(self, host: str, command: str, timeout: float = 60) -> ExecResult:
        """Run a shell command in a host; a host that is not running raises HostDown."""
        res = exec_in(self.client, self.container(host), command, timeout)
        if res.rc == 125 and not self.running(host):
            raise HostDown(host, res.stderr.strip())
        return res

    def exec_stream(self, host: str, command: str) -> Iterator[str]:
        """`sh -c command` in a host, its output line by line as it comes (`testbed logs --follow`)."""
        api = self.client.api
        # A followed log may be quiet for hours: this stream's own client never times out a read.
        follower = docker.from_env(timeout=FOLLOW_TIMEOUT_S)
        try:
            ex = api.exec_create(self.container(host), ["sh", "-c", command])
            yield from _lines(follower.api.exec_start(ex["Id"], stream=True))
        except docker.errors.APIError as exc:
            if not self.running(host):
                raise HostDown(host, str(exc.explanation or exc)) from None
            raise LabError(f"{host}: {exc.explanation or exc}") from None
        finally:
            follower.close()

    def interactive(self, host: str, argv: list[str]) -> int:
        """A command with the user's terminal attached (`testbed shell`), through the docker CLI.

        The Docker API's attach is not a terminal; the CLI handles raw mode,
        window size and signals. It honours DOCKER_HOST like this process does.
        """
        if not self.running(host):
            raise HostDown(host, "not running")
        docker_cli = shutil.which("docker")
        if docker_cli is None:
            raise LabError("an interactive shell needs the docker command line (Debian: docker.io, or docker-cli); "
                           f"without it: testbed exec LAB {host} -- COMMAND")
        tty = ["-t"] if sys.stdin.isatty() and sys.stdout.isatty() else []
        return subprocess.call([docker_cli, "exec", "-i", *tty, self.container(host), *argv])

    def read_file(self, host: str, path: str) -> str:
        """A file's text; one that does not exist (yet) reads as empty, a failed read raises."""
        p = shlex.quote(path)
        res = self.exec(host, f"if [ -e {p} ]; then cat {p}; fi")
        if not res.ok:
            raise LabError(f"cannot read {path} on {host} (exit {res.rc}): {res.stderr.strip()}")
        return res.stdout

    def container_log(self, host: str, tail: int | str = "all") -> str:
        try:
            return self.client.api.logs(self.container(host), tail=tail).decode("utf-8", "replace")
        except docker.errors.APIError:
            return ""

    # --- scenario operations --------------------------------------------------------

    def stop(self, host: str) -> None:
        """The host goes down at once, like a machine losing power."""
        try:
            self.client.api.kill(self.container(host))
            self.client.api.wait(self.container(host), timeout=30)
        except docker.errors.APIError as exc:
            if "is not running" not in str(exc):
                raise LabError(f"cannot stop {host}: {exc.explanation}") from None

    def start(self, host: str) -> None:
        boots = self.boots(host)
        try:
            self.client.api.start(self.container(host))
        except docker.errors.APIError as exc:
            raise LabError(f"cannot start {host}: {exc.explanation}") from None
        self.wait_ready(host, boots)

    def remove_hosts(self) -> int:
        """Remove the lab's host containers and their data volumes (`testbed reset`); how many hosts.

        The networks stay, and so does every other object of the run (a
        `testbed capture` sidecar keeps capturing): only objects with a host
        label go. ``up`` creates the hosts again from the plan.
        """
        removed, _ = remove_objects(self.client, [f"{LABEL_RUN}={self.plan.run_id}", LABEL_HOST], networks=False)
        return removed

    def teardown(self) -> tuple[int, int]:
        return teardown(self.client, self.plan.run_id)


class LiveCapture:
    """A running `testbed capture` sidecar: its tcpdump's standard output as it comes.

    Iterate for the bytes (text lines or pcap); ``stop`` asks tcpdump to
    finish (it writes its last packet and exits, and the iteration ends), and
    ``close`` removes the sidecar, whatever state it is in.
    """

    def __init__(self, client: docker.DockerClient, container: str, segment: str, on_message: Progress):
        self.client = client
        self.container = container
        self.segment = segment
        self.on_message = on_message
        self.stopped = False
        self._errors: list[str] = []  # tcpdump's words before it listened: why it could not start
        self._listening = threading.Event()
        # A capture may be quiet for hours: its streams' own client never times out a read.
        self._follower = docker.from_env(timeout=FOLLOW_TIMEOUT_S)
        self._stdout: Iterator[bytes] | None = None
        self._stderr_reader: threading.Thread | None = None

    def start(self) -> None:
        api = self._follower.api
        try:
            # Attached before the start, so not a byte is missed (pcap: its file header first);
            # stdout and stderr each on its own stream, so "listening on" never lands in a pcap.
            self._stdout = api.attach(self.container, stdout=True, stderr=False, stream=True, logs=False)
            stderr = api.attach(self.container, stdout=False, stderr=True, stream=True, logs=False)
            self._stderr_reader = threading.Thread(target=self._relay, args=(stderr,), daemon=True)
            self._stderr_reader.start()
            self.client.api.start(self.container)
        except docker.errors.DockerException as exc:
            raise LabError(f"cannot start a capture on {self.segment}: "
                           f"{getattr(exc, 'explanation', None) or exc}") from None

    def _relay(self, stream: Iterable[bytes]) -> None:
        with contextlib.suppress(docker.errors.DockerException, OSError, ValueError):
            for line in _lines(stream):
                # "listening on br-…", or with -w "tcpdump: listening on br-…": the capture runs.
                if line.removeprefix("tcpdump: ").startswith("listening on"):
                    self._listening.set()
                if self._listening.is_set():
                    self.on_message(line)
                else:
                    self._errors.append(line)

    def __iter__(self) -> Iterator[bytes]:
        assert self._stdout is not None, "start() first"
        try:
            for chunk in self._stdout:
                if chunk:
                    yield chunk
        except (docker.errors.DockerException, OSError) as exc:
            if not self.stopped:
                raise LabError(f"the capture on {self.segment} broke off: {exc}") from None
        self._check_exit()

    def _check_exit(self) -> None:
        try:
            rc = self.client.api.wait(self.container, timeout=20).get("StatusCode", 0)
        except (docker.errors.DockerException, OSError):
            return  # removed meanwhile (`testbed down`): the bytes so far are all there is
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=5)
        if rc and not self.stopped:
            words = "; ".join(self._errors) or f"exit {rc}"
            raise CaptureFailed(f"tcpdump on segment {self.segment} could not capture: {words}")

    def stop(self) -> None:
        """Ask tcpdump to end (docker-init passes SIGINT on): it closes its output whole."""
        self.stopped = True
        with contextlib.suppress(docker.errors.DockerException, OSError):
            self.client.api.kill(self.container, signal="SIGINT")

    def close(self) -> None:
        with contextlib.suppress(docker.errors.DockerException, OSError):
            self.client.api.remove_container(self.container, force=True)
        self._follower.close()

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

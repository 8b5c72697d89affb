"""Generated bad input for `testbed validate` and the later stages, and the worker that runs it.

``generate(directory, count, seed)`` writes mutations of the shipped topologies
(a key deleted, renamed or duplicated, a value replaced by something hostile,
a line dropped or repeated) plus the special inputs issue 9 found: a directory,
a FIFO, /dev/zero, non-UTF-8 text, 1000 levels of nesting, alias bombs in the DNS
rules and in a variant's patch, 20,000 DNS rules.

Run as a script, this module is the worker: it checks each input under a
memory limit and a per-input alarm and writes one JSON line per input.
For every input, `testbed validate` must exit 0 or 2, print no internal error
and name the file in every problem. For every accepted file, every variant must
plan (two engine versions), render, and give a DNS configuration the DNS
server's own loader accepts, and no string of the topology that could break
a configuration file may appear in a rendered file (other than the JSON
DNS configuration, which is escaped by construction).
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import resource
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"

#: The 20,000-rule file is about validate (issue 9: naming rules was quadratic); planning it
#: again would only repeat the DNS server's parser at a cost of minutes on a loaded machine.
LATER_STAGES_MAX_BYTES = 512 * 1024

#: Characters that change the meaning of a line in some rendered file (or the terminal).
HOSTILE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\"'\\$`;#{}%\[\]]")

WEIRD_VALUES: list[Any] = [
    None, True, False, 0, -1, 2, 127, 128, 65536, 10**30, 1.5, float("inf"), float("nan"), "", " ", "x",
    "inf", "1e999", "0s", "-5s", "25h", "10s\n", "mx10\n", "example.net\n", "user\n", "..", "-rf", "a..b",
    "a b", "[bold red]x[/]", "[/]", "\x1b[31mred\x1b[0m", "\x1b]0;title\x07", "line1\nline2", "tab\there",
    "x\u2028y", "é", "a" * 300, "(a+)+$", "(x*)*y", "(?=x)", "[", "0.0.0.0/0", "127.0.0.0/8", "169.254.0.0/16",
    "224.0.0.0/4", "240.0.0.0/4", "::/0", "fe80::/10", "ff00::/8", "10.0.0.0/25", "10.0.0.0/26", "10.1.0.0/16",
    "198.18.1.0/24", "2001:db8:1::/64", "2001:db8::/63", "198.18.0.0/24", "x@y.z\n", "-rf@example.net",
    "a..b@example.net", "postfix", "exim", "sendmail", "dovecot", "ipv4", "ipv6", "dual", "router", "mta",
    "all", [], {}, ["x"], {"a": 1}, [None], "1.2.3.4", "1.2.3.4\n", "10 x.y.", "zz", "\"q\"", "a;b", "a#b",
    "${x}", "`id`", "%s", "a{b}", "1\r\n2",
]

#: Values a typo-free file might well hold, so that many mutants are still accepted.
PLAUSIBLE: dict[str, list[Any]] = {
    "fqdn": ["mx.example.net", "a.b.c.d.example.org", "x--y.example.net", "MX.example.net", "mx.example.net."],
    "subject": ["hello", "Grüße", "a: b", "x" * 200],
    "title": ["Title with [brackets] and $dollars", "multi\nline", "plain"],
    "description": ["desc with `ticks` and #hash", "multi\nline\n", "[link]"],
    "id": [2, 9, 99, 126, 127],
    "subnet_v4": ["10.9.0.0/24", "10.9.0.0/25", "10.9.0.128/25", "172.16.0.0/16"],
    "subnet_v6": ["2001:db8:99::/64", "fd00::/64", "fd00::/48"],
    "ipv4": ["10.0.0.0/8", "10.0.0.0/24", "198.18.0.0/23", "100.64.0.0/10"],
    "ipv6": ["fd00::/8", "fd00::/64", "2001:db8::/63", "2001:db8::/48"],
    "ttl": [0, 1, 2**31 - 1, 2**31],
    "pattern": ["a|b", "^x$", "status=(sent|deferred)", r"\d+"],
    "mailboxes": [["user", "first.last", "a+b", "x_y"], ["user", "user"]],
    "data": ["198.18.9.9", "10 mail.example.net.", "\"text\"", "mail.example.net."],
}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


def _mutate(data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    data = copy.deepcopy(data)
    paths = _paths(data)
    path = rng.choice(paths)
    parent, key = _get(data, path[:-1]), path[-1]
    op = rng.random()
    if op < 0.15 and isinstance(parent, dict):
        del parent[key]
    elif op < 0.25 and isinstance(parent, dict) and isinstance(key, str) and len(key) > 1:
        i = rng.randrange(len(key))
        parent[key[:i] + key[i + 1:]] = parent.pop(key)  # a typo in a key
    elif op < 0.55 and isinstance(key, str) and key in PLAUSIBLE:
        parent[key] = copy.deepcopy(rng.choice(PLAUSIBLE[key]))
    elif op < 0.65:
        names = [k for p in paths for k in p if isinstance(k, str)]
        parent[key] = rng.choice(names)  # a real name in the wrong place
    elif op < 0.75 and isinstance(_get(data, path), str):
        parent[key] = _get(data, path) + rng.choice(["\n", "\x1b[2J", "[/]", " ", ";", "\r"])
    else:
        parent[key] = copy.deepcopy(rng.choice(WEIRD_VALUES))
    return data


#: Values for the places issue 9 found weak, each a mix of good and bad.
TARGETS: dict[str, list[Any]] = {
    "fqdn": ["mx.example.net", "mx.example.net\n", "mx.example.net.", "a_b.example.net", "x.y", "[b]x.y",
             "mx.example.net\ninjected.example.net", "x" * 64 + ".net"],
    "domain": ["example.org", "example.org\n", "EXAMPLE.org", "a..b", "x.y", "ex_ample.org"],
    "mailbox": ["user2", "..", "-rf", "user\n", "a.b", ".a", "a.", "x+y", "Upper", "a/b"],
    "subject": ["ok", "two\nX-Injected: yes", "\x1b[31m", "[bold]x[/]", "tab\tin"],
    "pool4": ["10.0.0.0/8", "0.0.0.0/0", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
              "10.0.0.0/24", "10.0.0.0/23", "198.18.0.0/23"],
    "pool6": ["fd00::/8", "::/0", "fe80::/10", "ff00::/8", "2001:db8::/64", "2001:db8::/63", "2001:db8::/47"],
    "subnet4": ["10.7.0.0/24", "10.7.0.0/25", "10.7.0.128/25", "198.18.1.0/24", "127.0.0.0/24", "10.7.0.0/16"],
    "subnet6": ["2001:db8:77::/64", "2001:db8:1::/64", "fe80::/64", "ff00::/64", "fd00::/48"],
    "timing": ["1s", "0", 0, ".inf", float("inf"), "inf", 1e300, "25h", "86400", "0.001s", -1],
    "settle": [0, "0s", "5s", float("inf"), None, "1ms"],
    "pattern": ["ok", "(a+)+$", "(x*)*y", "(?=x)", "(?i)relay", "\\", "a{1000}{1000}"],
    "record": [
        {"name": "x.example.net", "type": "A", "data": "198.18.9.9"},
        {"name": "x.example.net", "type": "A", "data": "198.18.9.9\n"},
        {"name": "x.example.net\n", "type": "A", "data": "198.18.9.9"},
        {"name": "x.example.net", "type": "MX", "data": "10"},
        {"name": "x.example.net", "type": "TXT", "data": "\"a b\""},
        {"name": "x.example.net", "type": "CNAME", "data": "y.example.net."},
        {"name": "x.example.net", "type": "A", "data": "198.18.9.9", "ttl": 2**31},
        {"name": "[x]", "type": "A", "data": "198.18.9.9"},
        {"name": "x.example.net", "type": "PTR", "data": "a(b)"},
    ],
    "ttl": [0, 60, 2**31 - 1, 2**31, -1, 1.5],
    "id": [2, 126, 127, 128, 1, 10],
    "title": ["[bold red]x[/]", "[/]", "\x1b]0;owned\x07", "multi\nline", "$x `y` #z"],
}


def _targeted(data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Change one place issue 9 found weak: names that reach files, addresses, strings, values."""
    try:
        return _target(copy.deepcopy(data), rng)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError):
        return data  # an earlier mutation left no such place


def _target(data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    hosts = data.get("hosts") or {}
    domains = data.get("domains") or {}
    segments = data.get("segments") or {}
    pick = rng.choice(["fqdn", "domain", "mailbox", "subject", "pools", "subnet", "timing", "settle",
                       "pattern", "record", "ttl", "id", "router", "title", "variant"])
    if pick == "fqdn" and hosts:
        hosts[rng.choice(list(hosts))]["fqdn"] = rng.choice(TARGETS["fqdn"])
    elif pick == "domain" and domains:
        old = rng.choice(list(domains))
        domains[rng.choice(TARGETS["domain"])] = domains.pop(old)
    elif pick == "mailbox" and domains:
        dom = domains[rng.choice(list(domains))]
        dom["mailboxes"] = [*dom.get("mailboxes", []), rng.choice(TARGETS["mailbox"])]
    elif pick == "subject":
        sends = [s["send"] for s in data.get("scenario", []) if isinstance(s, dict) and "send" in s]
        if sends:
            rng.choice(sends)["subject"] = rng.choice(TARGETS["subject"])
    elif pick == "pools":
        data["pools"] = {"ipv4": rng.choice(TARGETS["pool4"]), "ipv6": rng.choice(TARGETS["pool6"])}
    elif pick == "subnet" and segments:
        for name in rng.sample(list(segments), min(len(segments), rng.choice([1, 2]))):
            seg = segments[name]
            if seg.get("family") in ("ipv4", "dual") or rng.random() < 0.3:
                seg["subnet_v4"] = rng.choice(TARGETS["subnet4"])
            if seg.get("family") in ("ipv6", "dual"):
                seg["subnet_v6"] = rng.choice(TARGETS["subnet6"])
    elif pick == "timing":
        key = rng.choice(["retry", "max_retry", "queue_lifetime", "bounce_lifetime", "connect_timeout",
                          "settle_timeout", "settle_quiet"])
        data.setdefault("timing", {})[key] = rng.choice(TARGETS["timing"])
    elif pick == "settle":
        data.setdefault("scenario", []).append({"settle": {"timeout": rng.choice(TARGETS["settle"])}})
    elif pick == "pattern" and hosts:
        mtas = [h for h, v in hosts.items() if v.get("kind") == "mta"] or list(hosts)
        data.setdefault("expect", []).append({"log": {"host": rng.choice(mtas), "pattern": rng.choice(TARGETS["pattern"])}})
    elif pick == "record":
        data.setdefault("dns", {}).setdefault("records", []).append(copy.deepcopy(rng.choice(TARGETS["record"])))
    elif pick == "ttl":
        data.setdefault("dns", {})["ttl"] = rng.choice(TARGETS["ttl"])
    elif pick == "id" and hosts:
        hosts[rng.choice(list(hosts))]["id"] = rng.choice(TARGETS["id"])
    elif pick == "router":
        routers = [v for v in hosts.values() if v.get("kind") == "router" and v.get("segments")]
        if routers:
            router = rng.choice(routers)
            router["segments"] = [*router["segments"], rng.choice(router["segments"])]
    elif pick == "title":
        data["title"] = rng.choice(TARGETS["title"])
    elif pick == "variant":
        variants = data.get("variants") or {}
        name = rng.choice([data.get("base_variant", "default"), "other", "x"])
        variants[name] = {"patch": {"hosts": {rng.choice(list(hosts) or ["h"]): {
            rng.choice(["softwre", "stack", "segment"]): rng.choice(["exim", "dual", "nowhere", "core"])}}}}
        data["variants"] = variants
    return data


def _text_mutation(text: str, rng: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    op = rng.random()
    if op < 0.4:
        lines.insert(i, lines[i])  # a duplicated line: often a duplicate key
    elif op < 0.7:
        del lines[i]
    else:
        pos = rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:pos] + rng.choice(["\t", ":", "- ", "&a ", "*a ", "{", "'", "!!binary ", "? "]) + lines[i][pos:]
    return "".join(lines)


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def special_inputs(directory: Path) -> list[str]:
    base = yaml.safe_load((TOPOLOGIES / "mx-routing.yaml").read_text())
    out: list[str] = []

    def write(name: str, content: str | bytes) -> None:
        path = directory / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        out.append(str(path))

    (directory / "a-directory.yaml").mkdir()
    out.append(str(directory / "a-directory.yaml"))
    os.mkfifo(directory / "a-fifo.yaml")
    out.append(str(directory / "a-fifo.yaml"))
    out.append("/dev/zero")
    out.append(str(directory / "does-not-exist.yaml"))
    write("latin1.yaml", _dump(base).replace("title:", "title: caf\xe9 #").encode("latin-1", "replace"))
    write("nested.yaml", "name: x\nsegments: " + "[" * 1000 + "]" * 1000 + "\n")
    write("nested-map.yaml", "name: x\n" + "".join("  " * i + f"k{i}:\n" for i in range(1000)))
    bomb = "".join(f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))
    anchors = "x:\n  - &l0 [x, x, x, x, x, x, x, x, x]\n" + bomb
    no_dns = {k: v for k, v in base.items() if k != "dns"}
    write("bomb-rules.yaml", _dump(no_dns) + anchors + "dns:\n  rules: *l9\n")
    no_variants = {k: v for k, v in base.items() if k != "variants"}
    write("bomb-patch.yaml", _dump(no_variants) + anchors + "variants:\n  big:\n    patch: {expect: *l9}\n")
    rules = [{"match": {"name": f"h{i}.brainbird.nl."}, "action": {"ttl": 1}} for i in range(10_000)]
    rules += [{"preset": "aaaa-late", "match": {"name": f"p{i}.brainbird.nl."}} for i in range(10_000)]
    many = {k: v for k, v in copy.deepcopy(base).items() if k != "variants"}
    many.setdefault("dns", {})["rules"] = rules
    write("many-rules.yaml", json.dumps(many))
    dup = _dump(base).replace("hosts:\n", "hosts:\n  relay: {kind: mta, segment: core}\n", 1)
    write("duplicate-host.yaml", dup)
    return out


def generate(directory: Path, count: int, seed: int) -> list[str]:
    """``count`` generated files plus the special inputs; returns their paths."""
    rng = random.Random(seed)
    bases = [yaml.safe_load(p.read_text()) for p in sorted(TOPOLOGIES.glob("*.yaml"))]
    paths = special_inputs(directory)
    n = 0
    while n < count:
        data = rng.choice(bases)
        for _ in range(rng.choice([1, 1, 1, 2])):
            data = _targeted(data, rng) if rng.random() < 0.6 else _mutate(data, rng)
        try:
            text = _dump(data)
        except (yaml.YAMLError, ValueError):
            continue
        if rng.random() < 0.15:
            text = _text_mutation(text, rng)
        path = directory / f"gen-{n:04d}.yaml"
        path.write_text(text)
        paths.append(str(path))
        n += 1
    return paths


# --- the worker --------------------------------------------------------------------------


class Hang(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise Hang()


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in _strings(k) + _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def check(path: str) -> dict[str, Any]:
    """One input through validate and, if accepted, plan, render and the DNS server's loader."""
    from click.testing import CliRunner

    from testbed.cli import main
    from testbed.dnsserver.config import parse_config
    from testbed.model import load_topology
    from testbed.plan import EngineCaps, plan_lab
    from testbed.render import lab_files
    from testbed.source import load_yaml

    result: dict[str, Any] = {"input": path, "failures": []}
    res = CliRunner().invoke(main, ["validate", path])
    result["exit"] = res.exit_code
    output = res.output
    if res.exit_code not in (0, 2):
        result["failures"].append(f"validate exited {res.exit_code}: {output[-500:]!r} {res.exception!r}")
    if "internal error" in output or "Traceback" in output:
        result["failures"].append(f"internal error: {output[-500:]!r}")
    for line in output.splitlines():
        if line.startswith("  ") and not line.startswith(f"  {path}"):
            result["failures"].append(f"a problem that does not name the file: {line!r}")
    if res.exit_code != 0 or os.path.getsize(path) > LATER_STAGES_MAX_BYTES:
        return result
    doc = load_yaml(Path(path))
    hostile = {s for s in _strings(doc.data) if len(s) > 1 and HOSTILE.search(s)}
    from testbed.model import variant_names

    for n, variant in enumerate(variant_names(doc.data)):
        shown = CliRunner().invoke(main, ["plan", path, "--variant", variant]) if n == 0 else None
        if shown is not None and shown.exit_code != 0:
            result["failures"].append(f"{variant}: accepted by validate, then plan exited {shown.exit_code}: "
                                      f"{shown.output[-300:]!r} {shown.exception!r}")
        try:
            topo = load_topology(path, variant)
            for api in ((1, 41), (1, 51)):  # the engines with and without IPv6-only networks
                plan = plan_lab(topo, "fuzz0001", EngineCaps(api))
                files = lab_files(plan)
            parse_config(json.loads(json.dumps(plan.dns_config())))  # the same DNS data for both
            for host, rendered in files.items():
                for f in rendered:
                    if f.path.endswith(".json"):
                        continue
                    leaked = next((s for s in hostile if s in f.content), None)
                    if leaked is not None:
                        result["failures"].append(f"{variant}: {leaked!r} reaches {host}:{f.path} unescaped")
        except Exception as exc:  # noqa: BLE001 - any exception here is what the test looks for
            result["failures"].append(f"{variant}: accepted by validate, then {type(exc).__name__}: {exc}")
    return result


def work(inputs: list[str], results: Path, seconds: int, memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    signal.signal(signal.SIGALRM, _alarm)
    with results.open("a") as out:
        for path in inputs:
            signal.alarm(seconds)
            try:
                result = check(path)
            except Hang:
                result = {"input": path, "exit": None, "failures": [f"no answer within {seconds} s (hang)"]}
            except MemoryError:
                result = {"input": path, "exit": None, "failures": ["memory limit reached"]}
            finally:
                signal.alarm(0)
            out.write(json.dumps(result) + "\n")
            out.flush()


if __name__ == "__main__":
    inputs_file, results_file, per_input_s, memory = sys.argv[1:5]
    work(Path(inputs_file).read_text().splitlines(), Path(results_file), int(per_input_s), int(memory))

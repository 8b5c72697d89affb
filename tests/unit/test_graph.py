"""The topology drawing: dot source from a plan (no graphviz binary needed), and `testbed graph`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from testbed import graph
from testbed.cli import main
from testbed.model import load_topology
from testbed.plan import EngineCaps, plan_lab
from testbed.planstore import plan_to_dict

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = ROOT / "tests" / "data" / "rundir"


def recorded() -> tuple[dict, dict]:
    return (json.loads((RUN_DIR / "plan.json").read_text()), json.loads((RUN_DIR / "result.json").read_text()))


def planned(name: str, variant: str | None = None) -> dict:
    topo = load_topology(ROOT / "topologies" / f"{name}.yaml", variant)
    return plan_to_dict(plan_lab(topo, "r1", EngineCaps((1, 41))))


def test_segments_are_clusters_coloured_by_family_with_their_real_subnets() -> None:
    plan, _ = recorded()
    src = graph.dot_source(plan)
    dual, v6 = graph.FAMILY_COLOURS["dual"], graph.FAMILY_COLOURS["ipv6"]
    core = src[src.index("subgraph cluster_core"):src.index("subgraph cluster_v6net")]
    assert "segment core (dual stack)" in core and f'color="{dual[0]}"' in core and f'fillcolor="{dual[1]}"' in core
    assert "198.18.5.0/24" in core and "2001:db8:5::/64" in core
    v6net = src[src.index("subgraph cluster_v6net"):]
    assert "segment v6net (IPv6 only)" in v6net and f'fillcolor="{v6[1]}"' in v6net
    assert "2001:db8:6::/64" in v6net
    assert "198.18.6.0/24" not in src  # the IPv6-only segment's placeholder IPv4 subnet is not the lab's
    for text in ("IPv4 only", "IPv6 only", "dual stack"):  # the legend
        assert text in src[src.index("cluster_legend"):]


def test_hosts_carry_kind_software_stack_and_addresses_and_routers_join_segments() -> None:
    plan, _ = recorded()
    src = graph.dot_source(plan)
    relay = src[src.index("host__relay ["):]
    relay = relay[:relay.index("\n")]
    assert "<B>relay</B>" in relay and "mta · postfix" in relay and "stack: dual stack" in relay
    assert "relay.skimbee.net" in relay and "198.18.5.25" in relay and "2001:db8:5::25" in relay
    assert "mailstore · dovecot" in src and "stack: IPv6 only" in src  # sk-imap on the IPv6-only segment
    # The router stands outside the segments, with an edge to each, labelled with its addresses there.
    assert "shape=octagon" in src[src.index("host__router ["):]
    assert re.search(r'host__router -> segment__core \[.*label="198\.18\.5\.2\\n2001:db8:5::2"', src)
    assert re.search(r'host__router -> segment__v6net \[.*label="2001:db8:6::2"', src)


def test_mx_preferences_are_edges_from_the_domain_to_its_mx_hosts() -> None:
    src = graph.dot_source(planned("mx-routing"))
    for host, pref in (("mx10", 10), ("mx20", 20), ("mx30", 30)):
        assert re.search(rf'"domain__brainbird\.nl" -> host__{host} \[.*label="MX {pref}"', src), host
    assert re.search(r'"domain__skimbee\.net" -> host__mail \[.*label="MX 10"', src)
    # mx-routing's relay sits on the IPv4-only segment: a red cluster.
    v4 = src[src.index("subgraph cluster_v4net"):]
    assert f'fillcolor="{graph.FAMILY_COLOURS["ipv4"][1]}"' in v4[:400] and "host__relay" in v4


def test_round_robin_names_point_at_each_of_their_hosts() -> None:
    src = graph.dot_source(planned("round-robin"))
    for host in ("mx-a", "mx-b", "mx-c"):
        assert f'"name__smtp.example.net" -> "host__{host}"' in src


def test_message_hops_are_drawn_with_their_family() -> None:
    plan, result = recorded()
    src = graph.dot_source(plan, result["messages"])
    assert re.search(r'host__relay -> host__mx10 \[.*label="m2 #1 IPv4"', src)
    assert re.search(r'host__relay -> host__mail \[.*label="m1 bounce #1 IPv6"', src)


def test_a_strange_name_cannot_break_the_dot_source() -> None:
    plan, _ = recorded()
    plan["hosts"]["relay"]["fqdn"] = 'relay<b>"&.example'
    src = graph.dot_source(plan)
    assert "relay&lt;b&gt;&quot;&amp;.example" in src


def test_without_dot_the_error_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph.shutil, "which", lambda _name: None)
    with pytest.raises(graph.GraphError, match=r"apt-get install graphviz"):
        graph.render("digraph {}", "svg")
    assert graph.render("digraph {}", "dot") == b"digraph {}"  # dot source needs no binary
    result = CliRunner().invoke(main, ["graph", "relay-bounce", "-o", "/dev/null"])
    assert result.exit_code == 3 and "apt-get install graphviz" in result.output and "Traceback" not in result.output


def test_the_cli_writes_dot_source_and_refuses_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "lab.dot"
    result = CliRunner().invoke(main, ["graph", "mx-routing", "--variant", "fixed", "--format", "dot", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("digraph lab {") and "mx-routing-fixed" in out.read_text()
    result = CliRunner().invoke(main, ["graph", "no-such-topology"])
    assert result.exit_code == 2 and "no topology 'no-such-topology'" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts: [\n")
    result = CliRunner().invoke(main, ["graph", str(bad)])
    assert result.exit_code == 2 and "not valid YAML" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["graph", str(tmp_path)])
    assert result.exit_code == 2 and "without plan.json" in result.output
    result = CliRunner().invoke(main, ["graph", "relay-bounce", "--format", "gif"])
    assert result.exit_code == 2
    result = CliRunner().invoke(main, ["graph", str(RUN_DIR), "--format", "dot", "-o", str(out)])
    assert result.exit_code == 0 and "relay-bounce-fixed" in out.read_text()


def test_many_messages_over_one_hop_are_one_arrow() -> None:
    plan, result = recorded()
    m2 = result["messages"]["m2"]
    messages = {f"m{i}": {**m2, "name": f"m{i}"} for i in range(2, 7)}
    src = graph.dot_source(plan, messages)
    arrows = [line for line in src.splitlines() if "host__relay -> host__mx10" in line]
    assert len(arrows) == 1 and 'label="m2 #1, m3 #1, +3 more IPv4"' in arrows[0]


def test_every_bundled_topology_and_variant_is_drawn_by_dot() -> None:
    if graph.dot_missing():
        pytest.fail(graph.dot_missing())  # Debian's graphviz package: make host-tools installs it
    from testbed.model import variant_names
    from testbed.source import load_yaml

    for path in sorted((ROOT / "topologies").glob("*.yaml")):
        for variant in variant_names(load_yaml(path).data):
            svg = graph.render(graph.dot_source(planned(path.stem, variant)), "svg").decode()
            assert svg.rstrip().endswith("</svg>") and "legend" in svg, (path.stem, variant)

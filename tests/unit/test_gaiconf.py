"""glibc's /etc/gai.conf: the named tables, explicit lines, validation, and the file a host gets."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from testbed import gaiconf
from testbed.errors import TopologyError
from testbed.model import load_topology
from testbed.plan import EngineCaps, plan_lab
from testbed.render import GAI_CONF, host_files

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def lines(text: str, kind: str) -> list[tuple[str, int]]:
    """The (prefix, value) lines of one kind, as glibc would read them (comments and blanks skipped)."""
    out = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0] == kind:
            out.append((words[1], int(words[2])))
    return out


def lookup(table: list[tuple[str, int]], address: str) -> int:
    """What glibc's match_prefix returns: the value of the longest prefix holding the address."""
    addr = ipaddress.ip_address(address)
    if addr.version == 4:
        addr = ipaddress.IPv6Address(f"::ffff:{addr}")
    best = max((ipaddress.IPv6Network(p) for p, _ in table if addr in ipaddress.IPv6Network(p)),
               key=lambda n: n.prefixlen)
    return dict((ipaddress.IPv6Network(p), v) for p, v in table)[best]


def test_rfc6724_table_is_written_out_in_full() -> None:
    text = gaiconf.render("rfc6724")
    precedence, label = lines(text, "precedence"), lines(text, "label")
    assert len(precedence) == 9 and len(label) == 9  # RFC 6724 section 2.1, every row
    assert ("::ffff:0:0/96", 35) in precedence and ("2002::/16", 30) in precedence
    assert ("2001::/32", 5) in precedence and ("fc00::/7", 3) in precedence
    assert ("2001::/32", 5) in label and ("fc00::/7", 13) in label and ("3ffe::/16", 12) in label
    assert lines(text, "scopev4") == [("::ffff:169.254.0.0/112", 2), ("::ffff:127.0.0.0/104", 2),
                                      ("::ffff:0.0.0.0/96", 14)]
    # What the table decides (slide 30): IPv4 above 6to4 above Teredo.
    assert lookup(precedence, "198.51.100.1") > lookup(precedence, "2002:c633:6402::25") > \
        lookup(precedence, "2001:0:c633:6401::25")


def test_glibc_default_table_is_the_built_in_one() -> None:
    text = gaiconf.render("glibc-default")
    precedence, label = lines(text, "precedence"), lines(text, "label")
    assert sorted(precedence) == sorted([("::1/128", 50), ("::/0", 40), ("2002::/16", 30), ("::/96", 20),
                                         ("::ffff:0:0/96", 10)])
    assert ("2001::/32", 7) in label and ("fec0::/10", 5) in label and ("fc00::/7", 6) in label
    assert len(label) == 8
    # RFC 3484's order: Teredo (::/0, 40) and 6to4 (30) above IPv4 (10).
    assert lookup(precedence, "2001:0:c633:6401::25") > lookup(precedence, "2002::1") > \
        lookup(precedence, "198.51.100.1")
    # Rule 5's labels: a native source (1) matches neither transition prefix.
    assert len({lookup(label, a) for a in ("2001:db8::1", "2001:0:c633:6401::25", "2002::1", "198.51.100.1")}) == 4


def test_explicit_lines_go_on_top_of_the_table() -> None:
    text = gaiconf.render("glibc-default", {"precedence": [("::ffff:0:0/96", 100)], "scopev4": [("10.0.0.0/8", 5)]})
    precedence = lines(text, "precedence")
    assert ("::ffff:0:0/96", 100) in precedence and ("::ffff:0:0/96", 10) not in precedence
    assert len(precedence) == 5  # replaced, the rest of the table kept: one line would replace glibc's whole table
    assert ("::ffff:10.0.0.0/104", 5) in lines(text, "scopev4") and len(lines(text, "scopev4")) == 4
    assert len(lines(text, "label")) == 8


def test_explicit_lines_alone_leave_the_other_kinds_to_glibc() -> None:
    text = gaiconf.render(None, {"label": [("2001::/32", 1)]})
    assert lines(text, "label") == [("2001::/32", 1)]
    assert lines(text, "precedence") == [] and "no precedence lines: glibc's built-in precedence table" in text


@pytest.mark.parametrize(("kind", "prefix", "wanted"), [
    ("label", "2001::/32", None),
    ("precedence", "::ffff:0:0/96", None),
    ("precedence", "::1", "give the prefix length"),
    ("precedence", "10.0.0.0/8", "write ::ffff:10.0.0.0/104"),
    ("label", "2001:db8::1/32", "did you mean 2001:db8::/32"),
    ("label", "2001::/129", "is not an IPv6 prefix"),
    ("label", "zz::/3", "is not an IPv6 prefix"),
    ("label", "2001::/x", "is not a prefix length"),
    ("scopev4", "169.254.0.0/16", None),
    ("scopev4", "::ffff:169.254.0.0/112", None),
    ("scopev4", "::ffff:0.0.0.0/96", None),
    ("scopev4", "2001::/96", "is not an IPv4 prefix"),
    ("scopev4", "::/96", "is not an IPv4 prefix"),
    ("scopev4", "10.0.0.1/8", "did you mean 10.0.0.0/8"),
])
def test_prefix_problems(kind: str, prefix: str, wanted: str | None) -> None:
    problem = gaiconf.prefix_problem(kind, prefix)
    assert (problem is None) if wanted is None else (problem is not None and wanted in problem)


def test_value_problems() -> None:
    assert gaiconf.value_problem("precedence", 0) is None
    assert gaiconf.value_problem("label", gaiconf.INT_MAX) is None
    assert "glibc ignores" in gaiconf.value_problem("label", gaiconf.INT_MAX + 1)
    assert gaiconf.value_problem("precedence", -1)
    assert gaiconf.value_problem("scopev4", 14) is None
    assert "0 to 15" in gaiconf.value_problem("scopev4", 16)
    assert gaiconf.value_problem("label", True)


def test_scopev4_in_ipv4_notation_is_written_mapped() -> None:
    assert gaiconf.parse_prefix("scopev4", "192.168.0.0/16") == ipaddress.IPv6Network("::ffff:192.168.0.0/112")
    with pytest.raises(ValueError, match="not an IPv4 prefix"):
        gaiconf.parse_prefix("scopev4", "2001::/112")


BASE = """
name: gai
segments:
  lan: {family: dual}
hosts:
  dns: {kind: dns, segment: lan}
  c:
    kind: client
    segment: lan
    gai_conf:
"""


def write(tmp_path: Path, gai: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(BASE) + textwrap.indent(textwrap.dedent(gai), " " * 6))
    return path


def problems(tmp_path: Path, gai: str) -> dict[str, tuple[int | None, str]]:
    with pytest.raises(TopologyError) as err:
        load_topology(write(tmp_path, gai))
    return {p.path: (p.line, p.message) for p in err.value.problems}


def test_each_bad_line_is_one_problem_at_its_line(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        table: glibc-default
        precedence:
          - {prefix: "::ffff:0:0/96", value: 100}
          - {prefix: "10.0.0.0/8", value: 5}
          - {prefix: "2001:db8::1/32", value: -1}
        label:
          - {prefix: "2001::/32", value: "seven"}
        scopev4:
          - {prefix: "10.0.0.0/8", value: 16}
        """)
    assert set(found) == {"hosts.c.gai_conf.precedence[1].prefix", "hosts.c.gai_conf.precedence[2].prefix",
                          "hosts.c.gai_conf.precedence[2].value", "hosts.c.gai_conf.label[0].value",
                          "hosts.c.gai_conf.scopev4[0].value"}
    assert found["hosts.c.gai_conf.precedence[1].prefix"][0] == 14
    assert "::ffff:10.0.0.0/104" in found["hosts.c.gai_conf.precedence[1].prefix"][1]
    assert found["hosts.c.gai_conf.scopev4[0].value"][0] == 19


def test_unknown_table_and_keys(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        table: rfc3484
        preference: []
        """)
    assert set(found) == {"hosts.c.gai_conf.table", "hosts.c.gai_conf.preference"}
    assert "glibc-default" in found["hosts.c.gai_conf.table"][1] and "rfc6724" in found["hosts.c.gai_conf.table"][1]
    assert "did you mean 'precedence'" in found["hosts.c.gai_conf.preference"][1]


def test_a_prefix_given_twice_is_named_at_the_second(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        label:
          - {prefix: "2001::/32", value: 7}
          - {prefix: "2002::/16", value: 2}
          - {prefix: "2001:0::/32", value: 5}
        """)
    assert list(found) == ["hosts.c.gai_conf.label[2].prefix"]
    assert found["hosts.c.gai_conf.label[2].prefix"] == (14, "2001:0::/32 is the prefix of label[0] again; give each prefix once")


def test_a_host_with_gai_conf_gets_the_file_others_keep_the_images(tmp_path: Path) -> None:
    topo = load_topology(write(tmp_path, "{table: rfc6724, precedence: [{prefix: '::ffff:0:0/96', value: 100}]}\n"))
    plan = plan_lab(topo, "t", EngineCaps((1, 41)))
    files = {f.path: f.content for f in host_files(plan, plan.hosts["c"])}
    assert lines(files[GAI_CONF], "precedence")[2] == ("::ffff:0:0/96", 100)
    assert GAI_CONF not in {f.path for f in host_files(plan, plan.hosts["dns"])}
    empty = plan_lab(load_topology(write(tmp_path, "{}\n")), "t", EngineCaps((1, 41)))
    assert empty.hosts["c"].gai_conf is None  # nothing given: the image's own file stays


def test_transition_reproduction_clients_get_their_tables() -> None:
    plan = plan_lab(load_topology(TOPOLOGIES / "transition-addresses.yaml"), "t", EngineCaps((1, 41)))
    tables = {name: host.gai_conf.table if host.gai_conf else None for name, host in plan.hosts.items()
              if host.kind == "client"}
    assert tables["py-ter"] is None and tables["py-ter-gd"] == "glibc-default"
    assert {tables[h] for h in ("py-nat-rfc", "py-ter-rfc", "py-stf-rfc", "sw-ter-rfc")} == {"rfc6724"}
    # The transition-shaped segments are pinned and routed by the lab router like any other.
    assert str(plan.segments["teredo-srv"].subnet_v6) == "2001:0:c633:6401::/64"
    assert str(plan.segments["sixtofour-cli"].subnet_v6) == "2002:c633:6404::/64"
    assert any(str(r.prefix) == "2001:0:c633:6401::/64" for r in plan.hosts["py-stf"].routes)
    fixed = plan_lab(load_topology(TOPOLOGIES / "transition-addresses.yaml", "fixed"), "u", EngineCaps((1, 41)),
                     [n for s in plan.segments.values() for n in s.subnets])
    assert not {str(s.subnet_v6) for s in fixed.segments.values()} & {str(s.subnet_v6) for s in plan.segments.values()}


def test_summary_names_the_table_and_counts_the_lines() -> None:
    assert gaiconf.summary("rfc6724", {}) == "rfc6724"
    assert gaiconf.summary("glibc-default", {"precedence": [("::ffff:0:0/96", 100)]}) == "glibc-default + 1 line"
    assert gaiconf.summary(None, {"label": [("2001::/32", 1)], "scopev4": [("10.0.0.0/8", 5)]}) == "2 lines"


def test_a_second_run_of_the_same_variant_is_refused_with_the_subnet() -> None:
    from testbed.errors import PreflightError

    topo = load_topology(TOPOLOGIES / "transition-addresses.yaml")
    with pytest.raises(PreflightError, match=r"pinned subnet 2001:0:c633:6401::/64 overlaps .* already in use"):
        plan_lab(topo, "t", EngineCaps((1, 41)), [ipaddress.ip_network("2001:0:c633:6401::/64")])

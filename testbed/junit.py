"""JUnit XML for CI systems (pure: results in, XML text out).

One ``testsuite`` per lab (``topology/variant``), one ``testcase`` per
expectation; a failed expectation's text holds its detail and the decisive log
lines of the messages it is about. A lab error is a ``testcase`` named "lab"
with an ``error``; an expectation that does not apply to the lab's software
(``when``) is ``skipped`` with the reason. The matrix writes one testcase per
cell. The format is the one Jenkins, GitLab and GitHub Actions' reporters read
(the JUnit 4 / Ant schema).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .matrix import row_cell_id
from .model import MessageExpect
from .results import RunResult

if TYPE_CHECKING:
    from .baseline import Comparison


def _suite(result: RunResult) -> ET.Element:
    plan = result.plan
    suite = ET.Element("testsuite", name=f"{result.label} ({plan.suite})",
                       time=f"{sum(result.timings.values()):.3f}")
    props = ET.SubElement(suite, "properties")
    for key, value in (("run_id", plan.run_id), ("suite", plan.suite), ("run_dir", str(result.run_dir.path)),
                       *((f"version:{k}", v) for k, v in sorted(result.versions.items()))):
        ET.SubElement(props, "property", name=key, value=str(value))
    classname = f"{plan.name}.{plan.variant}"
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if result.error:
        case = ET.SubElement(suite, "testcase", classname=classname, name="lab")
        ET.SubElement(case, "error", message=result.error).text = result.error
        counts["tests"] += 1
        counts["errors"] += 1
    for check in result.checks:
        counts["tests"] += 1
        case = ET.SubElement(suite, "testcase", classname=classname,
                             name=f"{check.index + 1:02d} {check.description or check.kind}")
        if check.status == "n/a":
            ET.SubElement(case, "skipped", message=check.detail)
            counts["skipped"] += 1
        elif check.status == "fail":
            exp = plan.expectations[check.index]
            hist = result.histories.get(exp.message) if isinstance(exp, MessageExpect) else None
            lines = hist.decisive_lines() if hist else []
            text = check.detail + ("\n\ndecisive log lines:\n" + "\n".join(lines) if lines else "")
            ET.SubElement(case, "failure", message=check.detail, type=check.kind).text = text
            counts["failures"] += 1
        else:
            ET.SubElement(case, "system-out").text = check.detail
    for key, value in counts.items():
        suite.set(key, str(value))
    return suite


def _document(suites: list[ET.Element], name: str) -> str:
    root = ET.Element("testsuites", name=name)
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(sum(int(s.get(key, "0")) for s in suites)))
    root.extend(suites)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def results_xml(results: Sequence[RunResult], name: str = "testbed") -> str:
    """The JUnit XML of one `testbed run` or `reproduce`: a testsuite per lab."""
    return _document([_suite(r) for r in results], name)


def matrix_xml(rows: Sequence[dict[str, Any]], name: str = "testbed matrix",
               comparison: Comparison | None = None) -> str:
    """The JUnit XML of a matrix: one testcase per cell.

    Without a baseline a cell fails when it did not behave as expected; with
    one (``comparison``) it fails when its outcome changed since the baseline,
    as the exit code does, and a baseline cell this run did not have is skipped.
    """
    suite = ET.Element("testsuite", name=name)
    differences = comparison.by_cell() if comparison else {}
    failures = skipped = 0
    for row in rows:
        case = ET.SubElement(suite, "testcase", classname=f"{row.get('scenario')}.{row.get('variant')}",
                             name=f"{row.get('suite')} {row.get('assignment')}")
        summary = f"message {row.get('state')}; expectations {row.get('expectations')} hold"
        detail = "\n".join(str(x) for x in (row.get("error"), f"decisive: {row.get('decisive')}",
                                             f"run directory: {row.get('run_dir')}") if x)
        diff = differences.get(row_cell_id(row))
        if comparison is not None:
            if diff and diff.failure:
                failures += 1
                ET.SubElement(case, "failure", message="outcome changed since the baseline",
                              type="baseline").text = "\n".join(diff.lines()) + "\n" + detail
                continue
            known = "" if row.get("as_expected") else " (not as expected, as in the baseline)"
            notes = "\n".join(diff.lines()) if diff else ""
            ET.SubElement(case, "system-out").text = summary + known + ("\n" + notes if notes else "")
        elif not row.get("as_expected"):
            failures += 1
            ET.SubElement(case, "failure", message=row.get("error") or summary).text = detail
        else:
            ET.SubElement(case, "system-out").text = summary
    for diff in (comparison.differences if comparison else []):
        if diff.kind == "not run":
            scenario, variant, suite_name, assignment = diff.cell.split("/", 3)
            case = ET.SubElement(suite, "testcase", classname=f"{scenario}.{variant}", name=f"{suite_name} {assignment}")
            ET.SubElement(case, "skipped", message="in the baseline, not run this time")
            skipped += 1
    suite.set("tests", str(len(rows) + skipped))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    return _document([suite], name)

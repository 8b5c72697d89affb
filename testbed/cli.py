"""The `testbed` command line.

Exit codes: 0 every expectation holds; 1 some expectation does not hold (a
matrix with --baseline: some cell's outcome changed); 2 bad input (topology,
arguments, a baseline, shards that do not fit); 3 the machine or the lab failed
(no Docker, address clash, an image that does not build, a container that did
not start).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from . import __version__, gaiconf, resources
from .errors import InputError, TestbedError, TopologyError
from .model import SOFTWARE, SUITES, did_you_mean, load_topology, software_everywhere, validate_file, variant_names
from .progressview import ProgressView
from .source import load_yaml, parse_yaml, read_text

EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_ENVIRONMENT = 3

# Not a terminal (CI logs, pipes): a wide fixed width instead of rich's 80 columns.
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 140))
console = Console(stderr=True, width=_WIDTH)
out = Console(width=_WIDTH)
# Plain lines (the nested engine's relayed output); long work uses a live ProgressView on a terminal.
_plain = ProgressView(console, live=False)
_progress = _plain.lab
_image_progress = _plain.image


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Errors the user can act on become a message and an exit code, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (TopologyError, InputError) as exc:
            _error(str(exc))
            sys.exit(EXIT_INPUT)
        except TestbedError as exc:
            _error(str(exc))
            sys.exit(EXIT_ENVIRONMENT)
        except KeyboardInterrupt:
            _error("interrupted; the lab's Docker objects were removed")
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # usage errors: click prints them and exits 2
        except Exception as exc:  # noqa: BLE001 - last resort, keeps tracebacks out of users' faces
            if os.environ.get("TESTBED_DEBUG"):
                raise
            _error(f"internal error: {type(exc).__name__}: {exc}\n(set TESTBED_DEBUG=1 to see the traceback)")
            sys.exit(EXIT_ENVIRONMENT)

    return wrapper


def _error(message: str) -> None:
    console.print(message, style="red", markup=False, highlight=False, soft_wrap=True)  # one line per problem




def _parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: expected PATH=VALUE, e.g. hosts.relay.stack=dual", param_hint="--set")
        path, _, raw = item.partition("=")
        try:
            overrides[path.strip()] = parse_yaml(raw, "--set", object).data if raw else ""
        except TopologyError:
            overrides[path.strip()] = raw  # not YAML: the text as it is
    return overrides


def _mta_overrides(path: Path, mta: str | None) -> dict[str, Any]:
    """--mta X: every MTA host of the topology runs X."""
    return software_everywhere(load_yaml(path).data, mta) if mta else {}


def _topology_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = resources.bundled_topology(name_or_path)
    if bundled:
        return bundled
    known = resources.topology_names()
    raise click.BadParameter(f"no topology {name_or_path!r}{did_you_mean(name_or_path, known)}; "
                             f"known: {', '.join(known)}", param_hint="TOPOLOGY")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="testbed")
def main() -> None:
    """Reproduce IPv4/IPv6 mail interoperability failures with real MTAs in Docker."""


# --- offline commands -------------------------------------------------------------


@main.command()
@click.argument("files", nargs=-1, required=True)
@_guard
def validate(files: tuple[str, ...]) -> None:
    """Check topology files (every variant); report all problems at once."""
    failed = False
    for f in files:  # a bad file never keeps the others from being checked
        try:
            names = validate_file(f)
            out.print(f"{f}: ok (variants: {', '.join(names)})", highlight=False, markup=False)
        except TopologyError as exc:
            failed = True
            _error(str(exc))
    sys.exit(EXIT_INPUT if failed else 0)


@main.command()
@click.argument("what", type=click.Choice(["topology", "result", "matrix", "baseline"]))
@_guard
def schema(what: str) -> None:
    """Print a JSON Schema: `topology` (the topology file's), `result` (result.json's), `matrix` (matrix.json's),
    `baseline` (a `matrix --save-baseline` file's).

    With yaml-language-server (VS Code's YAML extension, Neovim, Helix), save the
    topology's and put `# yaml-language-server: $schema=topology.schema.json` on a
    topology's first line. The result, matrix and baseline schemas describe the
    files a run writes, for scripts that read them; docs/schemas/ holds all four.
    """
    click.echo(json.dumps(json_schema(what), indent=2))


def json_schema(what: str) -> dict[str, Any]:
    """The JSON Schema `testbed schema WHAT` prints (and docs/schemas/WHAT.schema.json holds)."""
    from .baseline import baseline_json_schema
    from .model import topology_json_schema
    from .resultschema import matrix_json_schema, result_json_schema

    return {"topology": topology_json_schema, "result": result_json_schema, "matrix": matrix_json_schema,
            "baseline": baseline_json_schema}[what]()


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="The tar.gz to write (default: RUN_DIR.tar.gz beside the run directory).")
@_guard
def bundle(run_dir: Path, out: Path | None) -> None:
    """Pack a run directory into one tar.gz with a README (what was run, how to read it), for a bug report."""
    from .bundle import BundleError, load_result, write_bundle

    try:
        load_result(run_dir)
    except BundleError as exc:
        raise click.BadParameter(str(exc), param_hint="RUN_DIR") from None
    target = write_bundle(run_dir, out)
    click.echo(f"{target} ({target.stat().st_size // 1024} KiB)")


def _check_api(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from .plan import EngineCaps

    try:
        EngineCaps.parse(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected an engine API version such as 1.41 or 1.51") from None
    return value


def _common_topology_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--set", "sets", multiple=True, metavar="PATH=VALUE",
                      help="Override a topology value, e.g. hosts.relay.software=exim (repeatable).")(fn)
    fn = click.option("--mta", type=click.Choice(SOFTWARE["mta"]), help="Run every MTA host with this software.")(fn)
    fn = click.option("--suite", type=click.Choice(SUITES), help="Debian release of the images (default: the topology's).")(fn)
    return fn


@main.command()
@click.argument("topology")
@click.option("--variant", help="Variant to plan (default: the file's base variant).")
@click.option("--api", default="1.41", show_default=True, callback=_check_api, help="Engine API version to plan for.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@_common_topology_options
@_guard
def plan(topology: str, variant: str | None, api: str, as_json: bool, sets, mta, suite) -> None:
    """Show addresses, routes and DNS records a topology would get (no Docker needed)."""
    from .plan import EngineCaps, plan_lab
    from .planstore import plan_to_dict
    from .runner import new_run_id

    path = _topology_path(topology)
    topo = load_topology(path, variant, {**_mta_overrides(path, mta), **_parse_sets(sets)})
    lab = plan_lab(topo, new_run_id(), EngineCaps.parse(api), suite=suite)
    if as_json:
        out.print_json(json.dumps(plan_to_dict(lab)))
        return
    # Topology strings are text, never markup: Text() keeps "[bold]" in a name as it is.
    table = Table(title=Text(f"{topo.name} / {topo.variant}"), show_lines=False)
    for col in ("host", "kind", "software", "stack", "addresses", "routes"):
        table.add_column(col)
    for h in lab.hosts.values():
        table.add_row(*map(Text, (
            h.name, h.kind,
            h.software + (f"\ngai.conf: {gaiconf.summary(h.gai_conf.table, h.gai_conf.entries())}" if h.gai_conf else ""),
            h.stack,
            "\n".join(map(str, h.addresses())),
            "\n".join(f"{r.prefix} via {r.via}" for r in h.routes),
        )))
    out.print(table)
    for zone in lab.zones:
        if zone.origin.endswith("arpa."):
            continue
        out.print(Text(zone.origin, style="bold"))
        for r in zone.records:
            out.print(f"  {r.name} {r.ttl} {r.type} {r.data}", highlight=False, markup=False)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--timeline-rows", type=click.IntRange(0), default=None,
              help="At most this many timeline rows in the page (default 400; all are in timeline.jsonl).")
@_guard
def report(run_dir: Path, timeline_rows: int | None) -> None:
    """Write RUN_DIR/report.html again from the run directory alone (a MATRIX_DIR: matrix.html and each cell's).

    One self-contained HTML file: the topology drawn, each message's path, the
    client steps, the expectations with their evidence, the timeline and
    links to the logs, configs and client traces beside it.
    """
    from .bundle import BundleError, load_result
    from .htmlreport import TIMELINE_LIMIT, write_matrix_report, write_report

    if (run_dir / "matrix.json").is_file():
        target, warnings = write_matrix_report(run_dir)
    else:
        try:
            load_result(run_dir)
        except BundleError as exc:
            hint = "" if (run_dir / "result.json").is_file() else "; or a matrix directory (with matrix.json)"
            raise click.BadParameter(f"{exc}{hint}", param_hint="RUN_DIR") from None
        target, warnings = write_report(run_dir, TIMELINE_LIMIT if timeline_rows is None else timeline_rows)
    for warning in warnings:
        console.print(f"note: {warning}", style="yellow", markup=False, highlight=False)
    click.echo(f"{target} ({max(1, target.stat().st_size // 1024)} KiB)")


@main.command()
@click.argument("topology")
@click.option("--variant", help="Variant to draw (default: the file's base variant).")
@click.option("--format", "fmt", type=click.Choice(["svg", "png", "dot"]), default="svg", show_default=True)
@click.option("-o", "--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (default: TOPOLOGY-VARIANT.FORMAT in the current directory; - for stdout).")
@_common_topology_options
@_guard
def graph(topology: str, variant: str | None, fmt: str, out_file: Path | None, sets, mta, suite) -> None:
    """Draw a topology without running it: segments by family, hosts, routers, MX preferences (SVG, PNG, dot).

    TOPOLOGY is a bundled name, a topology file, or a run directory (its plan.json).
    """
    from . import graph as drawing
    from .plan import EngineCaps, plan_lab
    from .planstore import plan_to_dict
    from .runner import new_run_id

    candidate = Path(topology)
    if candidate.is_dir():
        if not (candidate / "plan.json").is_file():
            raise click.BadParameter(f"{topology} is a directory without plan.json (not a run directory)",
                                     param_hint="TOPOLOGY")
        try:
            data = json.loads((candidate / "plan.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"{candidate / 'plan.json'}: cannot be read as JSON ({exc})",
                                     param_hint="TOPOLOGY") from None
        name = f"{(data.get('topology') or {}).get('name', 'lab')}-{(data.get('topology') or {}).get('variant', '')}"
    else:
        path = _topology_path(topology)
        topo = load_topology(path, variant, {**_mta_overrides(path, mta), **_parse_sets(sets)})
        data = plan_to_dict(plan_lab(topo, new_run_id(), EngineCaps((1, 41)), suite=suite))
        name = f"{topo.name}-{topo.variant}"
    title = f"{name} (planned; addresses as on an engine with API 1.41)" if not candidate.is_dir() else name
    body = drawing.render(drawing.dot_source(data, title=title), fmt)
    if out_file is not None and str(out_file) == "-":
        sys.stdout.buffer.write(body)
        return
    target = out_file or Path(f"{name.rstrip('-')}.{fmt}")
    try:
        target.write_bytes(body)
    except OSError as exc:
        raise TestbedError(f"cannot write {target}: {exc.strerror or exc}") from None
    click.echo(f"{target} ({max(1, len(body) // 1024)} KiB)")


@main.command()
@click.argument("topology")
@click.option("--variant", help="Variant to render.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory to write into.")
@_common_topology_options
@_guard
def render(topology: str, variant: str | None, out_dir: str, sets, mta, suite) -> None:
    """Write every host's rendered configuration files (no Docker needed)."""
    from .plan import EngineCaps, plan_lab
    from .render import lab_files, write_tree
    from .runner import new_run_id

    path = _topology_path(topology)
    topo = load_topology(path, variant, {**_mta_overrides(path, mta), **_parse_sets(sets)})
    lab = plan_lab(topo, new_run_id(), EngineCaps((1, 41)), suite=suite)
    write_tree(lab_files(lab), Path(out_dir))
    out.print(f"wrote configuration of {len(lab.hosts)} hosts to {out_dir}")


# --- images ---------------------------------------------------------------------------


def _check_debian_image(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from .imagesource import ImageSourceError, check_repository

    if value is None:
        return None
    try:
        return check_repository(value, "--debian-image")
    except ImageSourceError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.option("--suite", type=click.Choice(SUITES), default="bookworm", show_default=True)
@click.option("--build", is_flag=True, help="Build what is missing or out of date.")
@click.option("--rebuild", is_flag=True, help="Rebuild everything, the Debian base included.")
@click.option("--base-source", type=click.Choice(["auto", "registry", "debootstrap"]),
              help="Where testbed/debian comes from (default: $TESTBED_BASE_SOURCE or auto: "
                   "the registry if the engine reaches it, else debootstrap).")
@click.option("--debian-image", metavar="REPOSITORY", callback=_check_debian_image,
              help="Repository to pull the base from, tagged by suite "
                   "(default: $TESTBED_DEBIAN_IMAGE or debian), e.g. registry.example:5000/library/debian.")
@_guard
def images(suite: str, build: bool, rebuild: bool, base_source: str | None, debian_image: str | None) -> None:
    """List the lab's images, or build them (base pulled from a registry, or debootstrapped)."""
    from .images import ensure_images, image_status
    from .imagesource import settings_from_env

    base = settings_from_env(source=base_source, repository=debian_image)
    if build or rebuild:
        with ProgressView(console) as view:
            ensure_images(None, suite, rebuild=rebuild, base=base,
                          progress=lambda image, msg: view.image(f"image {image}", msg))
    table = Table(title=f"images ({suite})")
    for col in ("image", "tag", "present", "up to date"):
        table.add_column(col)
    for row in image_status(None, suite, base=base):
        table.add_row(row.name, row.tag, "yes" if row.present else "no", "yes" if row.up_to_date else "no")
    out.print(table)


# --- running labs ------------------------------------------------------------------------


def _run(paths_variants: list[tuple[Path, str | None]], overrides_for, suite: str | None,
         as_json: bool, keep: bool, runs: str | None, junit: str | None = None, capture: bool = True) -> None:
    from . import fabric
    from .report import print_results
    from .runner import RunOptions, ensure_images_for, plan_runs, run_plans

    topologies = [load_topology(p, v, overrides_for(p)) for p, v in paths_variants]
    client = fabric.connect()
    plans = plan_runs(client, topologies, suite)
    with ProgressView(console) as view:
        image_ids = ensure_images_for(plans, progress=view.image)
        options = RunOptions(keep=keep, suite=suite, progress=view.lab, capture=capture)
        if runs:
            options.runs_root = Path(runs)
        results = run_plans(client, plans, options, image_ids)
    if junit:
        from .junit import results_xml

        Path(junit).write_text(results_xml(results), encoding="utf-8")
    if as_json:
        docs = [r.document() for r in results]  # what each result.json holds, schema_version included
        out.print_json(json.dumps(docs if len(docs) > 1 else docs[0]))
    else:
        print_results(results, out)
    if any(r.error for r in results):
        sys.exit(EXIT_ENVIRONMENT)
    sys.exit(0 if all(r.passed for r in results) else EXIT_FAILED)


_CAPTURE_HELP = "Capture every segment's packets into RUN_DIR/captures/SEGMENT.pcap (README: Packet captures)."


def _run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--capture/--no-capture", default=True, show_default=True, help=_CAPTURE_HELP)(fn)
    fn = click.option("--junit", type=click.Path(dir_okay=False, writable=True),
                      help="Also write JUnit XML here (a test case per expectation), for CI.")(fn)
    fn = click.option("--runs", type=click.Path(file_okay=False), help="Where run directories go (default ./runs).")(fn)
    fn = click.option("--keep", is_flag=True, help="Leave the lab running (remove it with `testbed down`).")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(fn)
    return _common_topology_options(fn)


@main.command()
@click.argument("topology")
@click.option("--variant", "variants", multiple=True, help="Variant(s) to run (default: the base variant).")
@click.option("--all-variants", is_flag=True, help="Run every variant, side by side.")
@_run_options
@_guard
def run(topology: str, variants: tuple[str, ...], all_variants: bool, sets, mta, suite, as_json, keep, runs,
        junit, capture) -> None:
    """Bring a topology's lab up, run its scenario, check its expectations, tear it down."""
    path = _topology_path(topology)
    names = variant_names(load_yaml(path).data)
    chosen = names if all_variants else list(variants) or [names[0]]
    overrides = {**_mta_overrides(path, mta), **_parse_sets(sets)}
    _run([(path, v) for v in chosen], lambda p: overrides, suite, as_json, keep, runs, junit, capture)


@main.command()
@click.argument("name")
@_run_options
@_guard
def reproduce(name: str, sets, mta, suite, as_json, keep, runs, junit, capture) -> None:
    """Run every variant of a study reproduction (e.g. mx-routing), broken and fixed."""
    path = _topology_path(name)
    names = variant_names(load_yaml(path).data)
    overrides = {**_mta_overrides(path, mta), **_parse_sets(sets)}
    _run([(path, v) for v in names], lambda p: overrides, suite, as_json, keep, runs, junit, capture)


def _shard_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    from .shards import ShardError, parse_shard

    try:
        return parse_shard(value) if value is not None else None
    except ShardError as exc:
        raise click.BadParameter(str(exc)) from None


def _baseline_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    """Read the baseline before any lab runs: a typo costs a second, not a matrix."""
    from .baseline import load

    try:
        return load(Path(value)) if value is not None else None
    except TopologyError as exc:
        raise click.BadParameter(str(exc)) from None


def _matrix_result_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What a matrix run and a merge both write and compare."""
    fn = click.option("--save-baseline", type=click.Path(dir_okay=False, writable=True, path_type=Path),
                      help="Write every cell's outcome here, for a later --baseline (docs/regression.md).")(fn)
    fn = click.option("--baseline", callback=_baseline_option, type=click.Path(dir_okay=False),
                      help="Compare every cell with this baseline; exit 1 when an outcome changed "
                           "(new versions alone: printed, exit 0).")(fn)
    fn = click.option("--junit", type=click.Path(dir_okay=False, writable=True),
                      help="Also write JUnit XML here (a test case per cell), for CI.")(fn)
    return fn


def _finish_matrix(run: Any, junit: str | None, baseline: Any, save_baseline: Path | None,
                   elsewhere: frozenset[str] = frozenset()) -> None:
    """Print the table (and the baseline's differences), write JUnit and the new baseline, exit.

    With --baseline the comparison decides the exit code: a cell that fails its
    expectations exactly as it did in the baseline is known, not a regression.
    """
    from . import baseline as bl
    from .junit import matrix_xml

    now = bl.build(run.rows)
    comparison = bl.compare(baseline, now, elsewhere) if baseline is not None else None
    if junit:
        Path(junit).write_text(matrix_xml(run.rows, comparison=comparison), encoding="utf-8")
    out.print(run.table + ("\n" + run.changes if run.changes else ""), highlight=False, markup=False)
    out.print(f"{len(run.rows)} labs in {run.elapsed_s:.0f} s; table: {run.target / 'matrix.md'}", highlight=False)
    if save_baseline:
        save_baseline.write_text(bl.dump(now), encoding="utf-8")
        out.print(f"baseline of {len(now.cells)} cells written to {save_baseline}", highlight=False, markup=False)
    if comparison is not None:
        out.print(comparison.text(), end="", highlight=False, markup=False)
        sys.exit(EXIT_FAILED if comparison.failed else 0)
    sys.exit(0 if run.as_expected else EXIT_FAILED)


@main.group(invoke_without_command=True)
@click.option("--suite", "suites", multiple=True, type=click.Choice(SUITES), help="Debian release(s) (default: bookworm).")
@click.option("--mta", "mtas", multiple=True, type=click.Choice(SOFTWARE["mta"]), help="Only these MTAs (default: all).")
@click.option("--jobs", type=click.IntRange(1, 8), default=2, show_default=True, help="Labs running at once.")
@click.option("--spec", type=click.Path(dir_okay=False), help="Matrix file (default: topologies/matrices/default.yaml).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Where matrix.md/.json go (default: runs/matrix-TIME).")
@click.option("--shard", callback=_shard_option, metavar="K/N",
              help="Run only the K-th of N shares of the cells (1/3, 2/3, 3/3); join them with `matrix merge`.")
@click.option("--capture/--no-capture", default=True, show_default=True, help=_CAPTURE_HELP)
@_matrix_result_options
@click.pass_context
@_guard
def matrix(ctx: click.Context, suites, mtas, jobs: int, spec: str | None, out_dir: str | None, shard, capture: bool,
           junit: str | None, baseline, save_baseline: Path | None) -> None:
    """Run every reproduction with every MTA (and mixed assignments); write an outcomes table.

    `testbed matrix merge DIR...` joins shards' tables (docs/regression.md).
    """
    import time

    from .matrixrun import run_matrix
    from .rundir import runs_root

    if ctx.invoked_subcommand:
        given = [p.opts[0] for p in ctx.command.params
                 if p.name and ctx.get_parameter_source(p.name) is click.core.ParameterSource.COMMANDLINE]
        if given:  # they would be ignored silently: merge has its own
            raise click.UsageError(f"options before `{ctx.invoked_subcommand}` are the matrix run's "
                                   f"({', '.join(given)}); put them after `{ctx.invoked_subcommand}`")
        return
    topologies = resources.topologies_dir()
    target = Path(out_dir) if out_dir else runs_root() / f"matrix-{time.strftime('%Y%m%d-%H%M%S')}"

    with ProgressView(console) as view:

        def report(done: int, total: int, cell, row) -> None:
            mark = "[green]as expected[/]" if row["as_expected"] else "[red]NOT as expected[/]"
            view.cell(done, total, f"[{done}/{total}] {cell.scenario}/{cell.variant} {cell.suite} {cell.label}: "
                                   f"{row['state']} {mark} ({row['expectations']})", row["as_expected"])

        run = run_matrix(Path(spec) if spec else resources.default_matrix_spec(), topologies,
                         list(suites) or ["bookworm"], list(mtas) or None, jobs, target,
                         on_row=report, image_progress=view.image, capture=capture, shard=shard)
    if run.shard:
        out.print(f"shard {shard}: {len(run.rows)} of the matrix's {len(run.shard['matrix_cells'])} cells",
                  highlight=False)
    _finish_matrix(run, junit, baseline, save_baseline, run.in_other_shards)


@matrix.command("merge")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Where the joined matrix.md/.json/.html go (default: runs/matrix-merged-TIME).")
@_matrix_result_options
@_guard
def matrix_merge(dirs: tuple[Path, ...], out_dir: str | None, junit: str | None, baseline,
                 save_baseline: Path | None) -> None:
    """Join the matrix.json of every shard (`matrix --shard K/N --out DIR`) into one matrix.

    Refuses a cell twice, shards of different N or of different matrices, and a
    missing shard. Whole matrices of different cells (one per MTA) join too.
    """
    import time

    from .matrixrun import merge_matrices
    from .rundir import runs_root

    target = Path(out_dir) if out_dir else runs_root() / f"matrix-merged-{time.strftime('%Y%m%d-%H%M%S')}"
    run = merge_matrices(list(dirs), target, progress=_image_progress)
    _finish_matrix(run, junit, baseline, save_baseline)


@main.command()
@click.argument("lab", required=False)
@click.option("--all", "everything", is_flag=True,
              help="Remove every lab of yours (of your TESTBED_SESSION, when set); see --everyone.")
@click.option("--everyone", is_flag=True, help="With --all: every user's labs on this engine, not only yours.")
@click.option("--expired", is_flag=True, help="Remove every lab whose time to live (`testbed up --ttl`) has run out.")
@_guard
def down(lab: str | None, everything: bool, everyone: bool, expired: bool) -> None:
    """Remove a kept or leftover lab, by handle or run id (its containers, networks and volumes)."""
    from . import fabric
    from .livelab import reap_expired, resolve
    from .owner import is_mine, scope_labels

    if not lab and not everything and not expired:
        raise click.UsageError("give a LAB (its handle or run id: see `testbed ps`), --all or --expired")
    if everyone and not everything:
        raise click.UsageError("--everyone goes with --all")
    client = fabric.connect()
    if expired:
        gone = reap_expired(client)
        out.print(f"removed {len(gone)} expired lab(s){': ' + ', '.join(gone) if gone else ''}", highlight=False)
        if not lab and not everything:
            return
    scoped = everything and not everyone
    run_id = None if everything else resolve(fabric.list_runs(client), lab).run_id
    containers, networks = fabric.teardown(client, run_id, scope=scope_labels() if scoped else ())
    out.print(f"removed {containers} container(s) and {networks} network(s)")
    if everything:
        from .rootfs import remove_stale_scratch

        for stale in remove_stale_scratch():
            out.print(f"removed {stale}, a Debian rootfs left by a killed image build", highlight=False)
    if scoped:
        others = [r for r, objs in fabric.list_runs(client).items() if not is_mine(objs.labels)]
        if others:
            out.print(f"{len(others)} lab(s) of other users or sessions are left "
                      "(`testbed down --all --everyone` removes them too)")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the labs as JSON.")
@_guard
def ps(as_json: bool) -> None:
    """List labs that still have Docker objects: handle, whose, how old, until when, whether still in use."""
    import time

    from . import fabric
    from .livelab import remaining
    from .owner import LABEL_OWNER, lab_state
    from .plan import LABEL_HANDLE, LABEL_LAB, LABEL_VARIANT

    client = fabric.connect()
    runs = fabric.list_runs(client)
    now = time.time()
    rows = [{
        "handle": objs.labels.get(LABEL_HANDLE, ""),
        "run_id": run_id,
        "topology": objs.labels.get(LABEL_LAB, "?"),
        "variant": objs.labels.get(LABEL_VARIANT, "?"),
        "owner": objs.labels.get(LABEL_OWNER, "?"),
        "age_s": round(now - objs.created) if objs.created else None,
        "expires_in": remaining(objs.labels, now),
        "containers": objs.containers,
        "state": lab_state(objs.labels),
    } for run_id, objs in sorted(runs.items(), key=lambda kv: (kv[1].labels.get(LABEL_HANDLE, ""), kv[0]))]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("no testbed labs are running")
        return
    table = Table()
    for col in ("handle", "run id", "topology", "variant", "owner", "age", "expires in", "containers", "state"):
        table.add_column(col)
    for r in rows:
        age = f"{r['age_s'] / 60:.0f} min" if r["age_s"] is not None else "-"
        state = f"[red]{r['state']}[/]" if r["state"] == "orphaned" else r["state"]
        table.add_row(r["handle"] or "-", r["run_id"], r["topology"], r["variant"], r["owner"], age, r["expires_in"],
                      str(r["containers"]), state)
    out.print(table)
    if any(r["state"] == "orphaned" for r in rows):
        out.print("orphaned: the process that made the lab is gone; `testbed down LAB` removes it")


# --- nested engines -----------------------------------------------------------------


@main.group()
def engine() -> None:
    """A Docker engine of another version, nested in this machine's engine (see docs/engines.md).

    Debian's docker.io per suite: bookworm 20.10, trixie 26.1, forky 28.5. Point
    any testbed command, the tests or the docker CLI at it with DOCKER_HOST.
    """


def _engine_suite_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    from .engine import DEFAULT_ENGINE_SUITE, ENGINE_SUITES

    return click.option("--suite", type=click.Choice(list(ENGINE_SUITES)), default=DEFAULT_ENGINE_SUITE,
                        show_default=True, help="Debian suite whose docker.io runs nested.")(fn)


def _engine_progress(message: str) -> None:
    if message.startswith("image "):
        label, _, rest = message.partition(": ")
        _image_progress(label, rest)
    else:
        _progress("engine", message)


@engine.command("up")
@_engine_suite_option
@click.option("--no-load", is_flag=True, help="Do not copy this engine's lab images into it.")
@_guard
def engine_up(suite: str, no_load: bool) -> None:
    """Start a nested engine and keep it; prints the DOCKER_HOST to use."""
    from . import engine as nested
    from . import fabric

    host = fabric.connect()
    started = nested.start(host, suite, progress=_engine_progress)
    try:
        if not no_load:
            nested.load_images(host, started, nested.lab_images(host), _engine_progress)
    except BaseException:
        nested.stop(host, started.name)
        raise
    out.print(f"export DOCKER_HOST={started.docker_host}", highlight=False)
    console.print(f"remove it with: testbed engine down {started.name}", highlight=False)


@engine.command("run", context_settings={"ignore_unknown_options": True})
@_engine_suite_option
@click.option("--no-load", is_flag=True, help="Do not copy this engine's lab images into it.")
@click.option("--images", "image_suites", multiple=True, type=click.Choice(SUITES),
              help="Copy only the lab images of this Debian suite (repeatable; default: all).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_guard
def engine_run(suite: str, no_load: bool, image_suites: tuple[str, ...], command: tuple[str, ...]) -> None:
    """Run COMMAND against a fresh nested engine, then remove the engine (also on Ctrl-C).

    Example: testbed engine run --suite forky -- pytest tests/integration/test_network.py
    """
    from . import engine as nested
    from . import fabric

    host = fabric.connect()
    sys.exit(nested.run_command(host, command, suite, not no_load, _engine_progress, image_suites or SUITES))


@engine.command("down")
@click.argument("name", required=False)
@click.option("--all", "everything", is_flag=True, help="Remove every nested engine.")
@_guard
def engine_down(name: str | None, everything: bool) -> None:
    """Remove a nested engine (container, volume, socket) with everything in it."""
    from . import engine as nested
    from . import fabric

    if not name and not everything:
        raise click.UsageError("give an engine NAME (see `testbed engine ps`) or --all")
    removed = nested.stop(fabric.connect(), None if everything else name)
    out.print(f"removed engine(s): {', '.join(removed)}" if removed else "no such engine")


@engine.command("ps")
@_guard
def engine_ps() -> None:
    """List nested engines and their DOCKER_HOST."""
    from . import engine as nested
    from . import fabric

    found = nested.running(fabric.connect())
    if not found:
        out.print("no nested engines")
        return
    table = Table()
    for col in ("name", "suite", "DOCKER_HOST"):
        table.add_column(col)
    for e in found:
        table.add_row(e.name, e.suite, e.docker_host)
    out.print(table)


@main.command()
@click.argument("lab")
@click.argument("action", type=click.Choice(["list", "set", "add", "clear"]))
@click.argument("rules_file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@_guard
def dns(lab: str, action: str, rules_file: str | None) -> None:
    """Show or change a running lab's DNS behaviour rules (LAB: its handle or run id; see docs/dns.md).

    RULES_FILE (YAML or JSON, `-` for stdin) holds a list of rules or presets; a
    rule's client may be a lab host name. Bad rules are refused with every
    problem listed, and the active rules stay as they were.
    """
    from . import fabric
    from .adapters.dns import control_command
    from .plan import LABEL_ADDRESSES, LABEL_HOST, LABEL_KIND

    if action in ("set", "add") and not rules_file:
        raise click.UsageError(f"`{action}` needs a RULES_FILE (or - for stdin)")
    if action in ("list", "clear") and rules_file:
        raise click.UsageError(f"`{action}` takes no RULES_FILE")
    # Read once (stdin cannot be read twice) and checked before Docker is asked.
    text = (click.get_text_stream("stdin").read() if rules_file == "-" else read_text(Path(rules_file))) if rules_file else ""
    rules = _read_rules(rules_file, text, None) if rules_file else None
    from .livelab import resolve

    client = fabric.connect()
    run_id = resolve(fabric.list_runs(client), lab).run_id
    containers = fabric.lab_containers(client, run_id)
    servers = [c for c in containers if (c.get("Labels") or {}).get(LABEL_KIND) == "dns"]
    if not servers:
        raise click.BadParameter(f"lab {lab!r} has no DNS server running (see `testbed ps`)", param_hint="LAB")
    if rules_file:
        hosts = {(c.get("Labels") or {}).get(LABEL_HOST): (c.get("Labels") or {}).get(LABEL_ADDRESSES, "")
                 for c in containers}
        rules = _read_rules(rules_file, text, {h: a.split(",") for h, a in hosts.items() if h and a})
    res = fabric.exec_in(client, servers[0]["Id"], control_command(action, rules))
    out.print((res.stdout + res.stderr).strip(), highlight=False, markup=False)
    sys.exit(0 if res.ok else EXIT_INPUT)


def _read_rules(rules_file: str, text: str, addresses: dict[str, list[str]] | None) -> Any:
    """A DNS rule file, checked by the DNS server's parser; every problem at its file:line.

    Without ``addresses`` (before the lab is known) a lab host name stands for
    any client; with them, each becomes that host's addresses.
    """
    from .dnsserver.rules import parse_rules
    from .model.checks import _parse_rule_path
    from .plan import rules_with_client_addresses

    name = "<stdin>" if rules_file == "-" else rules_file
    doc = parse_yaml(text, name, (dict, list))
    rules, prefix = doc.data, ()
    if isinstance(rules, dict) and set(rules) == {"rules"}:
        rules, prefix = rules["rules"], ("rules",)
    if addresses is None:
        addresses = {c: ["ipv4"] for c in _client_names(rules)}
    checked = rules_with_client_addresses(rules, addresses)
    _, errors = parse_rules(checked, path="")
    if errors:
        raise TopologyError([doc.problem(prefix + _parse_rule_path(e.path), e.message) for e in errors],
                            subject="the DNS rules")
    return checked


def _client_names(rules: Any) -> set[str]:
    """Clients of a rule list written as a lab host name (not ipv4/ipv6, an address or a prefix)."""
    from .model import NAME_RE

    found = set()
    for rule in rules if isinstance(rules, list) else []:
        match = rule.get("match") if isinstance(rule, dict) else None
        clients = match.get("client") if isinstance(match, dict) else None
        for c in clients if isinstance(clients, list) else [clients]:
            if isinstance(c, str) and c not in ("ipv4", "ipv6") and re.fullmatch(NAME_RE, c):
                found.add(c)
    return found


@main.command()
@_guard
def doctor() -> None:
    """Check this machine: the engine and its firewall, a routing probe, address pools, build tools."""
    import shutil

    from . import engine_check, fabric
    from .imagenames import image_tag
    from .model import Pools
    from .preflight import check_pools, host_reserved

    client = fabric.connect()
    caps = fabric.engine_caps(client)
    image = next((t for t in (image_tag("base", s) for s in SUITES) if fabric.image_exists(client, t)), None)
    facts = engine_check.gather(client, image)
    api = ".".join(map(str, caps.api_version))
    backend = f", firewall {facts.firewall_backend}" if facts.firewall_backend else ""
    out.print(f"Docker engine {facts.version}, API {api} ({facts.os}, kernel {facts.kernel}{backend})", highlight=False)
    out.print("  IPv6-only networks: " + ("native (API >= 1.48)" if caps.ipv6_only_networks
                                           else "emulated (IPv4 removed inside each container)"))
    out.print("  networks at create: " + ("all at once" if caps.multi_network_create else "one, the rest connected after start"))
    findings = engine_check.assess(facts)
    marks = {"ok": "[green]ok[/]", "note": "[dim]--[/]", "problem": "[bold red]!![/]"}
    for f in findings:
        out.print(f"  {marks[f.level]} {escape(f.text)}", highlight=False)
    check_pools(Pools(), host_reserved())
    out.print(f"  default pools {Pools().ipv4} and {Pools().ipv6} are clear of this machine's routes and addresses")
    for line in _base_source_lines(client, shutil.which("debootstrap") is not None):
        out.print(line, highlight=False)
    if not engine_check.labs_will_work(findings):
        raise TestbedError("labs will not work on this engine (see above)")
    out.print("[green]ready[/]")


def _base_source_lines(client: Any, have_debootstrap: bool) -> list[str]:
    """How testbed/debian can be had here: the registry (asked through the engine) or debootstrap."""
    from .imagenames import DEFAULT_SUITE
    from .images import probe_registry
    from .imagesource import ENV_SOURCE, SourceKind, settings_from_env

    settings = settings_from_env()
    lines = [f"  base image source: {settings.source.value} ({ENV_SOURCE})"]
    if settings.source is not SourceKind.DEBOOTSTRAP:
        reference = settings.reference(DEFAULT_SUITE)
        failure = probe_registry(client, reference)
        lines.append(f"  registry: {reference} " + ("can be pulled" if failure is None else f"not available: {failure.detail}"))
    if settings.source is not SourceKind.REGISTRY:
        tool = "present" if have_debootstrap else "missing (apt-get install debootstrap)"
        root = "yes" if os.geteuid() == 0 else "no (debootstrap needs root)"
        lines.append(f"  debootstrap: {tool}; root: {root}")
    return lines


# The live-lab commands (up, exec, shell, logs, stop, start, capture, reset) live in their own module.
from . import cli_live  # noqa: E402,F401 - registers its commands on main

if __name__ == "__main__":
    from testbed.cli import main as registered  # `python -m`: the module copy cli_live registered on

    registered()

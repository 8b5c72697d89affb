"""The shapes of result.json and matrix.json (pydantic), their schema version and their JSON Schemas.

The writers (``RunResult.document``, ``matrixrun``) pass every file through
these models, so a bug that writes another shape fails at once, in the unit
tests, and the published schemas (docs/schemas/, ``testbed schema result``)
describe every key a run writes. Readers (the HTML report, ``testbed bundle``)
read older files too, which lack keys added since: they check only the
schema version (``version_problem``), never the whole shape.

Versioning: ``schema_version`` changes when a key is renamed or removed or
its meaning or type changes, i.e. when a reader of the old files would read
the new ones wrong. A new key is added to the models in the same version;
readers ignore keys they do not know. Files without ``schema_version`` were
written before it existed and have version 1's shape (minus later additions).

Which models allow keys they do not name: the top level of both files does
(other parts of the project add fields before this module knows them, and a
reader of a same-version file must not trip over them), and so do the
open-ended dicts (a step's ``detail``, a client's ``labels`` and resolver
answer: their keys depend on the step, the topology and the resolver). Every
other record is written by exactly one ``to_dict`` and is closed: a key that
``to_dict`` gains must be described here first, so the schema stays the
documentation (the writer's validation in the unit tests says so otherwise).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .clienttrace import RESULTS
from .model import EXPECT_KINDS, RESOLVERS, STEP_KINDS, ClientAction, ClientProtocol, MessageState

#: The version of result.json's and matrix.json's shape this testbed writes (and the newest it reads).
SCHEMA_VERSION = "1"

_JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

Family = Literal["ipv4", "ipv6"]
CheckStatus = Literal["pass", "fail", "n/a"]
#: What a hop's last log event says happened there (``queued``/``received``: no outcome logged yet).
HopOutcome = Literal["relayed", "delivered", "deferred", "bounced", "expired", "frozen", "discarded",
                     "queued", "received"]
#: The step kinds as they run (a sweep is expanded into its steps before it runs).
StepKind = Literal[tuple(k for k in STEP_KINDS if k != "sweep")]  # type: ignore[valid-type]
ExpectKind = Literal[EXPECT_KINDS]  # type: ignore[valid-type]
AttemptResult = Literal[RESULTS]  # type: ignore[valid-type]
Resolver = Literal[RESOLVERS]  # type: ignore[valid-type]


class Closed(BaseModel):
    """A record one ``to_dict`` writes: every key named here, with its exact JSON type (no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Open(BaseModel):
    """A record other keys may join (the top level of a file): unknown keys are kept as they are."""

    model_config = ConfigDict(extra="allow", strict=True)


# --- result.json ------------------------------------------------------------------------


class Expectation(Closed):
    """One expectation of the topology and how it came out."""

    index: int = Field(description="position in the topology's `expect` list (0-based)")
    kind: ExpectKind = Field(description="the expectation's kind (its one key in the topology file)")
    description: str = Field(description="the topology's description, or one made from the expectation")
    status: CheckStatus = Field(description="pass, fail, or n/a (its `when` excludes this lab's software)")
    detail: str = Field(description="the facts that decided it, or why it failed ('; '-separated)")
    histogram: dict[str, int] = Field(
        default_factory=dict,
        description="distribution expectations only (absent otherwise): server, `elsewhere`, "
                    "`not in a server's log` or `failed` -> how many were counted there")


class Hop(Closed):
    """One host's part in a message's history; keys without a value are left out."""

    host: str = Field(description="the lab host")
    queue_id: str = Field(description="the queue id this host gave the message")
    outcome: HopOutcome = Field(description="what this host's log says it did with the message last")
    next_host: str | None = Field(None, description="the lab host it handed the message to (absent: none)")
    address: str | None = Field(None, description="the address of the last outcome's peer (absent: none logged)")
    family: Family | None = Field(None, description="that address's family (absent with the address)")
    reason: str | None = Field(None, description="the last outcome's reply or reason, as logged")
    in_queue: bool = Field(description="still in this host's queue at the end of the run")
    evidence: list[str] = Field(default_factory=list,
                                description="the log lines that explain this hop, each `host: line` (absent: none)")


class Delivery(Closed):
    recipient: str = Field(description="the address delivered to")
    host: str = Field(description="the lab host that delivered it into the mailbox")


class MessageHistory(Closed):
    """What happened to one message across the lab, and, nested, to the bounces it caused."""

    name: str = Field(description="the send step's id; a bounce: `<id> bounce`")
    message_id: str | None = Field(description="its Message-ID header")
    recipients: list[str] = Field(description="its envelope recipients (a bounce: the original sender)")
    state: MessageState = Field(
        description="delivered (to all its recipients, or some), returned (its bounce was delivered), queued, "
                    "bounce-queued (its bounce is still queued) or lost")
    path: list[str] = Field(description="the hosts it passed, in order (each hop's host)")
    delivered_to: list[Delivery] = Field(description="every delivery into a mailbox")
    dsn_generated_at: list[str] = Field(description="the hosts that generated a bounce for it")
    hops: list[Hop] = Field(description="its hops, in the order it travelled")
    dsns: list[MessageHistory] = Field(description="the bounces it caused, each followed the same way")


class ClientModel(Closed):
    of: str = Field(description="the software the behaviour model stands for")
    source: str | None = Field(description="where the modelled behaviour is documented")


class ClientResolver(Closed):
    name: Resolver = Field(description="the resolver the step asked for")
    model_of: str | None = Field(description="what a resolver model stands for (null: a real resolver)")
    answer: dict[str, Any] | None = Field(
        description="the resolver model's own report, as tb-trace recorded it (null: a real resolver); "
                    "its keys depend on the model")


class Lookup(Closed):
    """One getaddrinfo call the client made, as tb-trace saw it."""

    name: str = Field(description="the name looked up")
    resolver: str = Field(description="who answered: getaddrinfo, override, model:<name>, or resolver software "
                                      "such as c-ares")
    started: float = Field(description="epoch seconds, in the client container")
    duration_ms: float = Field(description="how long the lookup took")
    addresses: list[str] = Field(description="the addresses returned, in the order the client got them")
    error: str | None = Field(description="the resolver's error (null: it answered)")
    override: bool = Field(description="tb-trace handed the client another answer than the system resolver's")
    family: int = Field(description="the AF_* family asked for: 0 any, 2 IPv4, 10 IPv6")


class Attempt(Closed):
    """One TCP connection attempt of a client, from the capture on its own interfaces."""

    address: str = Field(description="the server address tried")
    family: Family = Field(description="the address's family")
    port: int = Field(description="the server port tried")
    started: float = Field(description="epoch seconds of its first SYN")
    ended: float = Field(description="epoch seconds of its SYN-ACK, RST or last packet")
    result: AttemptResult = Field(description="how the attempt ended: connected, refused (RST), timeout, unreachable "
                                              "(ICMP), or unanswered (abandoned: another attempt connected)")
    source_port: int = Field(description="the client's source port (0: not seen)")
    syns: int = Field(description="how many SYNs the client sent")
    source: str = Field(description="the client's source address (empty: not seen)")
    duration_ms: float = Field(description="from its first SYN to its end")
    host: str | None = Field(description="the lab host with that address (null: none)")
    received_by: str | None = Field(description="the lab host whose own log shows this connection (null: none)")


class ClientRun(Closed):
    """One run of a client step: the request, the resolver's answer, every attempt, the outcome."""

    id: str = Field(description="the step's id; run N of a repeated step: `<id>.N`")
    host: str = Field(description="the client host")
    software: str = Field(description="the client software (or behaviour model) that ran")
    version: str = Field(description="the client's version, as it printed it (empty: unknown)")
    model: ClientModel | None = Field(description="set when a behaviour model ran instead of the software itself")
    resolver: ClientResolver = Field(description="the resolver that answered the client")
    action: ClientAction = Field(description="submit a message, fetch a mailbox, or only connect")
    protocol: ClientProtocol = Field(description="the protocol spoken")
    server: str = Field(description="the name (or address) the client was given")
    port: int = Field(description="the server port")
    family: Literal["any", "ipv4", "ipv6"] = Field(description="the family the step restricted the client to")
    timeout_s: float = Field(description="the client's per-attempt connect timeout")
    labels: dict[str, Any] = Field(description="the step's free labels (a sweep sets its variable here)")
    resolved: list[str] = Field(description="the addresses the client got for the server's name, in order")
    resolver_error: str | None = Field(description="the resolver's error for the server's name (null: none)")
    lookups: list[Lookup] = Field(description="every name lookup the client made, in order")
    step: str = Field(description="the scenario step's id")
    run: int | None = Field(description="which run of a repeated step (null: not repeated)")
    attempts: list[Attempt] = Field(description="every connection attempt, in order")
    connected: Attempt | None = Field(description="the first attempt that connected (null: none)")
    ok: bool = Field(description="the client's own output says the action worked")
    reply: str | None = Field(description="the decisive server reply or the client's error line")
    detail: str = Field(description="more of what the client's output says (empty: nothing more)")
    total_ms: float = Field(description="the whole step inside the client container")
    started: float = Field(description="epoch seconds")
    ended: float = Field(description="epoch seconds")
    rc: int = Field(description="the client's exit status")


class Step(Closed):
    """One scenario step as it ran."""

    index: int = Field(description="position in the expanded scenario (0-based)")
    kind: StepKind = Field(description="the step's kind (its one key in the topology's scenario)")
    summary: str = Field(description="the step in words")
    started_at: float = Field(description="wall-clock start, epoch seconds")
    started_s: float = Field(description="seconds since the scenario started")
    duration_s: float = Field(description="how long the step took")
    ok: bool = Field(description="false: the step could not be carried out (the run's error says why)")
    # Open-ended: each kind records its own facts (send: reply, settle: polls and queued, dns: actions...).
    detail: dict[str, Any] = Field(description="what the step recorded; its keys depend on the kind, "
                                               "`error` when it failed")


class Timings(Closed):
    """Seconds each stage of the run took; a stage that did not run is absent."""

    bring_up: float | None = Field(None, description="networks and containers up, services ready")
    scenario: float | None = Field(None, description="the scenario's steps")
    collect: float | None = Field(None, description="reading logs, queues, mailboxes; tracking; the verdict")
    teardown: float | None = Field(None, description="saving container logs, removing the lab (absent: kept)")


class Capture(Closed):
    """One segment's packet capture (pcap, readable by tshark and Wireshark), with tcpdump's counts."""

    segment: str = Field(description="the segment captured on (on its Linux bridge)")
    family: Literal["ipv4", "ipv6", "dual"] = Field(description="the segment's family")
    file: str = Field(description="the capture file, relative to the run directory (captures/SEGMENT.pcap)")
    bytes: int = Field(description="the file's size")
    captured: int | None = Field(None, description="packets tcpdump wrote (absent: it reported no count)")
    dropped: int | None = Field(None, description="packets the kernel dropped before tcpdump read them")


class RunResultDoc(Open):
    """result.json: what one lab run concluded, and the evidence's summary."""

    schema_version: Literal[SCHEMA_VERSION] = Field(  # type: ignore[valid-type]
        SCHEMA_VERSION, description="the version of this file's shape (absent: written before versions, as 1)")
    topology: str = Field(description="the topology's name")
    title: str = Field(description="the topology's title")
    study: str = Field(description="the study it reproduces (empty: none)")
    variant: str = Field(description="the topology's variant that ran")
    run_id: str = Field(description="random per run; in the message ids, labels and the run directory's name")
    suite: str = Field(description="the Debian suite of the lab's images")
    software: dict[str, str] = Field(description="MTA and mailstore host -> its software")
    versions: dict[str, str] = Field(description="software -> the version seen in the lab")
    engine: str = Field(description="the container engine, e.g. `Docker 20.10.24+dfsg1 (API 1.41)`")
    passed: bool = Field(description="no error, at least one expectation passed, none failed")
    error: str | None = Field(description="why the lab could not be run or judged (null: it was)")
    expectations: list[Expectation] = Field(description="empty when the run ended in an error")
    messages: dict[str, MessageHistory] = Field(description="send step id -> what happened to that message")
    clients: dict[str, ClientRun] = Field(description="client run id -> what it did (also clients/ID.json)")
    steps: list[Step] = Field(description="the scenario's steps as they ran, up to one that failed")
    timings_s: Timings = Field(description="seconds per stage of the run")
    run_dir: str = Field(description="the run directory, as the runner named it")
    kept: bool = Field(description="the lab was left running (--keep)")
    captures: list[Capture] = Field(default_factory=list, description="packet captures of the run (absent: none)")


# --- matrix.json ------------------------------------------------------------------------


class RouteHop(Closed):
    """One host a message passed, and the family it left that host over."""

    host: str = Field(description="the lab host")
    family: Family | None = Field(description="the family of the peer address of its last outcome there: the host "
                                              "it was handed to, or the one that refused it (null: none logged)")


class MatrixCell(Closed):
    """Which cell of the matrix: its lab and MTA assignment (matrix.json's rows, a baseline's cells)."""

    scenario: str = Field(description="the topology")
    variant: str = Field(description="the topology's variant")
    suite: str = Field(description="the Debian suite of the cell's images")
    assignment: str = Field(description="`all <mta>` or a mixed assignment's name")
    software: dict[str, str] = Field(description="MTA host -> its software in this cell")


class MatrixRow(MatrixCell):
    """One cell of the matrix: a lab, and where its message (``m1``) and the bounce ended."""

    as_expected: bool = Field(description="the lab passed (result.json's `passed`)")
    expectations: str = Field(description="`passed/applied`, e.g. `5/6`")
    error: str | None = Field(description="why the lab could not be run or judged (null: it was)")
    versions: dict[str, str] = Field(description="software -> the version seen in the lab")
    run_dir: str = Field(description="the cell's run directory")
    delivered: bool | None = Field(
        description="the message reached a recipient (null: not tracked: never sent, or the run failed first)")
    dsn_at_sender: bool | None = Field(description="its bounce was delivered to the sender (null: not tracked)")
    state: MessageState | None = Field(description="the message's state (null: not tracked)")
    bounce_state: MessageState | None = Field(
        None, description="its last bounce's own state (null: no bounce, or not tracked; absent: an older file)")
    path: list[str] = Field(default_factory=list, description="the hosts it passed (absent: not tracked)")
    route: list[RouteHop] = Field(default_factory=list,
                                  description="the same hosts, each with the family it left over (absent: not "
                                              "tracked, or an older file)")
    bounce_route: list[RouteHop] = Field(default_factory=list,
                                         description="the same for its last bounce (absent: none)")
    message_ended: str = Field(description="`host: outcome (reason)` of its last hop, `-`: none")
    bounce_ended: str = Field(description="the same for its bounce; `no bounce`, `-`: none")
    decisive: str = Field(description="the log line that decided where it ended (`-`: none)")
    queue_ids: dict[str, list[str]] = Field(description="software -> the queue ids it gave (its log format)")


class ShardInfo(Closed):
    """Which share of a matrix a run (`testbed matrix --shard K/N`) ran."""

    index: int = Field(ge=1, description="K: this shard's number, 1..N")
    total: int = Field(ge=1, description="N: how many shards the matrix was split into")
    matrix_cells: list[str] = Field(
        description="the cell ids of the whole matrix (every shard), in the matrix's order; shards of one "
                    "matrix carry the same list, which is how `testbed matrix merge` checks they belong together")


class MergedShard(Closed):
    """One matrix.json `testbed matrix merge` joined."""

    source: str = Field(description="the directory it was read from")
    shard: str | None = Field(description="`K/N` (null: an unsharded matrix)")
    cells: int = Field(description="how many cells it held")
    elapsed_s: float = Field(description="its own elapsed_s")


class MatrixDoc(Open):
    """matrix.json: every cell of a matrix run."""

    schema_version: Literal[SCHEMA_VERSION] = Field(  # type: ignore[valid-type]
        SCHEMA_VERSION, description="the version of this file's shape (absent: written before versions, as 1)")
    elapsed_s: float = Field(description="seconds the labs ran, side by side (merged: the longest part's)")
    rows: list[MatrixRow] = Field(description="one per cell, in the matrix's order")
    shard: ShardInfo | None = Field(None, description="set when this run was one shard of a matrix (absent: all of it)")
    merged_from: list[MergedShard] = Field(
        default_factory=list, description="set by `testbed matrix merge`: the files joined (absent: one run)")


# --- writing, reading, publishing --------------------------------------------------------


def result_document(data: dict[str, Any]) -> dict[str, Any]:
    """result.json's content from ``RunResult.to_dict()``: validated (a wrong shape raises) and versioned."""
    return _document(RunResultDoc, data)


def matrix_document(rows: list[dict[str, Any]], elapsed_s: float, **extra: Any) -> dict[str, Any]:
    """matrix.json's content from ``matrix.outcome`` rows: validated (a wrong shape raises) and versioned.

    ``extra``: the other top-level keys (``shard``, ``merged_from``), left out when None.
    """
    return _document(MatrixDoc, {"elapsed_s": elapsed_s, "rows": rows,
                                 **{k: v for k, v in extra.items() if v is not None}})


def _document(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    doc = model.model_validate({"schema_version": SCHEMA_VERSION, **data})
    # exclude_unset: a key the writer leaves out (a hop's empty evidence) stays out, and nothing is added.
    return doc.model_dump(mode="json", exclude_unset=True)


def version_problem(data: Any, what: str) -> str | None:
    """Why this testbed cannot read a result.json or matrix.json (``what``), or None: it can.

    A file without ``schema_version`` predates versions and reads as version 1.
    """
    if not isinstance(data, dict) or "schema_version" not in data:
        return None
    version = data["schema_version"]
    major = str(version).split(".", 1)[0]
    if not isinstance(version, str | int) or isinstance(version, bool) or not major.isdigit():
        return f"{what} has a schema_version this testbed does not understand: {version!r}"
    if int(major) > int(SCHEMA_VERSION):
        return (f"{what} was written by a newer testbed (schema version {version}); this one reads "
                f"version {SCHEMA_VERSION}: read it with the testbed that wrote it, or upgrade")
    if int(major) < int(SCHEMA_VERSION):
        return f"{what} has schema version {version}, which no testbed wrote (this one writes {SCHEMA_VERSION})"
    return None


def json_schema_of(model: type[BaseModel], name: str, description: str,
                   version: str = SCHEMA_VERSION) -> dict[str, Any]:
    """A model's JSON Schema as this project publishes them: the dialect, an id and the file's version."""
    schema = model.model_json_schema(mode="validation")
    return {
        "$schema": _JSON_SCHEMA_DIALECT,
        "$id": f"urn:testbed:schema:{name}:{version}",
        "title": f"testbed {name}.json, schema version {version}",
        "description": description,
        "x-schema-version": version,
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def result_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of result.json, for scripts that read run directories."""
    return json_schema_of(RunResultDoc, "result",
                        "What one lab run concluded: the expectations, each message's history hop by hop, "
                        "the client steps, the scenario's steps, timings, versions (docs/architecture.md).")


def matrix_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of matrix.json."""
    return json_schema_of(MatrixDoc, "matrix",
                        "Every cell of an MTA matrix run: the lab, whether it behaved as expected, where its "
                        "message and the bounce ended, and the decisive log line.")

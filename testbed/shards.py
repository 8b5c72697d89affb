"""Splitting a matrix into shards, and joining the shards' matrix.json files again (pure).

A shard is ``K/N``: the cells sorted by cell id, every N-th starting at the
K-th. Sorting by id makes the share depend only on *which* cells the matrix
has, not on the order the spec lists them in, so N machines given the same
spec and options each run a disjoint share and together run every cell once.

Each shard's matrix.json records ``shard``: K, N and the ids of the whole
matrix's cells in the matrix's order. ``merge`` uses that list to refuse
shards of different matrices, to find a missing shard, and to put the rows
back in the order an unsharded run writes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import InputError
from .matrix import Cell, row_cell_id

T = TypeVar("T", bound=Cell)


class ShardError(InputError):
    """Shards that cannot be joined, or a K/N that is not one; the message says which and why."""


@dataclass(frozen=True)
class Shard:
    index: int  # K, 1..total
    total: int  # N

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"

    def select(self, cells: Sequence[T]) -> list[T]:
        """This shard's cells, in the order given (the matrix's order)."""
        ordered = sorted(cells, key=lambda c: c.id)
        mine = {c.id for c in ordered[self.index - 1 :: self.total]}
        return [c for c in cells if c.id in mine]

    def info(self, cells: Sequence[Cell]) -> dict[str, Any]:
        """matrix.json's ``shard`` for this share of ``cells`` (the whole matrix)."""
        return {"index": self.index, "total": self.total, "matrix_cells": [c.id for c in cells]}


_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> Shard:
    """``K/N`` -> Shard; anything else raises ShardError with what is wrong and what is expected."""
    match = _SHARD.fullmatch(text)
    if not match:
        raise ShardError(f"{text!r} is not K/N (e.g. 1/3: the first of three shards)")
    index, total = int(match[1]), int(match[2])
    if total < 1:
        raise ShardError(f"{text!r}: N must be at least 1")
    if not 1 <= index <= total:
        raise ShardError(f"{text!r}: K must be between 1 and N ({total}), the shards being 1/{total} .. {total}/{total}")
    return Shard(index, total)


@dataclass(frozen=True)
class Part:
    """One matrix.json to merge: where it came from and what it holds."""

    source: str
    document: dict[str, Any]

    @property
    def shard(self) -> dict[str, Any] | None:
        return self.document.get("shard")

    @property
    def shard_text(self) -> str | None:
        return f"{self.shard['index']}/{self.shard['total']}" if self.shard else None


@dataclass(frozen=True)
class Merged:
    rows: list[dict[str, Any]]
    elapsed_s: float  # the longest part's: shards run side by side, on several machines
    merged_from: list[dict[str, Any]]


def merge(parts: Sequence[Part]) -> Merged:
    """The parts' rows as one matrix; raises ShardError for duplicates, missing or foreign shards.

    Parts are either all shards of one matrix (then every shard 1..N must be
    there and the rows come back in the matrix's order) or all whole matrix
    runs of disjoint cells (e.g. one per MTA; the rows are kept in the order
    given).
    """
    if not parts:
        raise ShardError("nothing to merge: give the shards' directories")
    sharded = [p for p in parts if p.shard]
    if sharded and len(sharded) != len(parts):
        whole = ", ".join(p.source for p in parts if not p.shard)
        raise ShardError(f"some parts are shards and some are not ({whole}): merge the shards of one matrix, "
                         f"or whole matrices of different cells, not both")
    if sharded:  # which shards before which cells: "different splits" says more than the overlap it causes
        _check_split(parts)
    seen: dict[str, str] = {}
    for part in parts:
        for row in part.document["rows"]:
            cid = row_cell_id(row)
            if cid in seen:
                raise ShardError(f"cell {cid} is in both {seen[cid]} and {part.source}: overlapping shards "
                                 f"(the same directory twice?)")
            seen[cid] = part.source
    rows = [row for part in parts for row in part.document["rows"]]
    if sharded:
        rows = _in_matrix_order(parts[0].shard["matrix_cells"], rows)  # type: ignore[index]
    merged_from = [{"source": p.source, "shard": p.shard_text, "cells": len(p.document["rows"]),
                    "elapsed_s": float(p.document.get("elapsed_s", 0.0))} for p in parts]
    return Merged(rows, max(m["elapsed_s"] for m in merged_from), merged_from)


def _check_split(parts: Sequence[Part]) -> None:
    """Shards of one split of one matrix, each once, none missing."""
    first = parts[0]
    totals = {p.shard["total"] for p in parts}  # type: ignore[index]
    if len(totals) > 1:
        listing = ", ".join(f"{p.source} is {p.shard_text}" for p in parts)
        raise ShardError(f"shards of different splits ({listing}): every shard must come from the same --shard K/N")
    total = totals.pop()
    by_index: dict[int, str] = {}
    for part in parts:
        index = part.shard["index"]  # type: ignore[index]
        if index in by_index:
            raise ShardError(f"shard {index}/{total} twice: {by_index[index]} and {part.source}")
        by_index[index] = part.source
        if part.shard["matrix_cells"] != first.shard["matrix_cells"]:  # type: ignore[index]
            raise ShardError(f"{part.source} and {first.source} are shards of different matrices (their cells "
                             f"differ: another spec, --mta or --suite?)")
    missing = [f"{k}/{total}" for k in range(1, total + 1) if k not in by_index]
    if missing:
        raise ShardError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing: a merge needs every "
                         f"shard (did its job fail before it wrote matrix.json?)")


def _in_matrix_order(matrix_cells: list[str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows in the order an unsharded run writes them; every cell of the matrix must be there."""
    order = {cid: i for i, cid in enumerate(matrix_cells)}
    ran = {row_cell_id(r) for r in rows}
    unexpected = sorted(ran - order.keys())
    if unexpected:
        raise ShardError(f"cells not in the shards' matrix: {', '.join(unexpected)}")
    absent = [cid for cid in order if cid not in ran]
    if absent:
        raise ShardError(f"the shards do not hold every cell of their matrix; missing: {', '.join(absent)}")
    return sorted(rows, key=lambda r: order[row_cell_id(r)])

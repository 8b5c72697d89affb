"""The topology model: the schema, loading (variants, overrides) and the cross-reference checks.

``schema`` holds the pydantic classes, ``load`` reads and validates a file
(all problems at once), ``checks`` finds what the schema cannot see. Import
from here; the split is for readers, not for callers.
"""

from __future__ import annotations

from .checks import Loc, assign_host_ids, check_references, reachable_segments, segments_of
from .hints import did_you_mean
from .load import (
    deep_merge,
    load_topology,
    mta_host_names,
    set_path,
    software_everywhere,
    topology_from_doc,
    validate_file,
    variant_names,
)
from .schema import *  # noqa: F403 - the schema's classes are the model's vocabulary
from .schema import __all__ as _schema_names

__all__ = [
    *_schema_names,
    "Loc",
    "assign_host_ids",
    "segments_of",
    "check_references",
    "deep_merge",
    "did_you_mean",
    "load_topology",
    "mta_host_names",
    "reachable_segments",
    "set_path",
    "software_everywhere",
    "topology_from_doc",
    "validate_file",
    "variant_names",
]

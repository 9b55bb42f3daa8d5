"""The single definition of every artifact's tables, columns and schema version.

Stages import the schema of what they write and read from here; nothing else names columns.
"""

from __future__ import annotations

import re

from schemas.base import ArtifactSchema, SchemaError, TableSchema
from schemas.cf import CF
from schemas.eval import EVAL
from schemas.graph import GRAPH
from schemas.policy import POLICY
from schemas.queries import QUERIES_ARTIFACT
from schemas.raw import BOOK_CROSSING, ML_100K, RAW_GENERIC, SMOLLM2_135M, WIKIDATA_FILMS
from schemas.sft import SFT

ARTIFACTS: dict[str, ArtifactSchema] = {
    s.name: s
    for s in (
        ML_100K,
        WIKIDATA_FILMS,
        BOOK_CROSSING,
        SMOLLM2_135M,
        GRAPH,
        CF,
        QUERIES_ARTIFACT,
        POLICY,
        SFT,
        EVAL,
    )
}


# The one rule for artifact names (they become folder names in the workdir): letters, digits,
# ".", "_" and "-", starting with a letter or digit, so no name is a path ("a/b", "..", ".tmp-x").
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name: str, family: str | None = None) -> str:
    """``name`` if it is a valid artifact name (of ``family``: ``family`` or ``family-*``);
    otherwise a SchemaError (a ValueError, so config validators report it as they are)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SchemaError(
            f"'{name}' is not a valid artifact name: use letters, digits, '.', '_' and '-' "
            "(no path separators), starting with a letter or digit"
        )
    if family is not None and name != family and not name.startswith(family + "-"):
        raise SchemaError(f"'{name}' must be '{family}' or start with '{family}-'")
    return name


def schema_for(name: str) -> ArtifactSchema:
    """The schema of artifact ``name``. ``graph-books`` is a variant of ``graph``; user-defined
    raw sources share the generic raw schema."""
    check_name(name)
    if name in ARTIFACTS:
        return ARTIFACTS[name]
    base = name.split("-", 1)[0]
    if base in ARTIFACTS and ARTIFACTS[base].variants:
        return ARTIFACTS[base]
    return RAW_GENERIC


__all__ = ["ARTIFACTS", "ArtifactSchema", "SchemaError", "TableSchema", "check_name", "schema_for"]

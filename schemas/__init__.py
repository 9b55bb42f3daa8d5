"""The single definition of every artifact's tables, columns and schema version.

Stages import the schema of what they write and read from here; nothing else names columns.
"""

from __future__ import annotations

from schemas.base import ArtifactSchema, SchemaError, TableSchema
from schemas.cf import CF
from schemas.eval import EVAL
from schemas.graph import GRAPH
from schemas.policy import POLICY
from schemas.queries import QUERIES_ARTIFACT
from schemas.raw import BOOK_CROSSING, ML_100K, RAW_GENERIC, SMOLLM2_135M, WIKIDATA_FILMS

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
        EVAL,
    )
}


def schema_for(name: str) -> ArtifactSchema:
    """The schema of artifact ``name``. ``graph-books`` is a variant of ``graph``; user-defined
    raw sources share the generic raw schema."""
    if name in ARTIFACTS:
        return ARTIFACTS[name]
    base = name.split("-", 1)[0]
    if base in ARTIFACTS and ARTIFACTS[base].variants:
        return ARTIFACTS[base]
    return RAW_GENERIC


__all__ = ["ARTIFACTS", "ArtifactSchema", "SchemaError", "TableSchema", "schema_for"]

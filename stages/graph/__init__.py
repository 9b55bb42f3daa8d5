"""`rerec build-graph`: the item-attribute graph (DuckDB-readable Parquet) from a fetched source."""

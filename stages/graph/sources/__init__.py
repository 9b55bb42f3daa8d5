"""Input adapters for the graph stage. Each reads one kind of source and returns the same
`SourceTables`; the graph stage never looks at file formats.

    items         item_key, title, year                    (one row per item, keys unique)
    item_attrs    item_key, relation, value                (attributes the source itself has)
    users         user_key, age, gender, occupation, location
    interactions  user_key, item_key, rating, timestamp

Keys keep the source's own ids (MovieLens ids as integers, ISBNs as strings).
"""

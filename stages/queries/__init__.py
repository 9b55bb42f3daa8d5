"""`rerec make-queries`: RecBench+-style query splits from a graph, and the reader consumers use."""

"""The dual-graph reward (format, NDCG, QAS on the item-attribute graph, PAS on the user-item
graph): one scorer shared by training (`rl`) and evaluation (`eval`)."""

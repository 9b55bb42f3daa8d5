"""Text helpers shared by producers and consumers of titles (one normaliser, one article list)."""

"""`rerec sft`: a supervised cold start on completions written from the graph (train split only)."""

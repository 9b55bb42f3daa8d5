"""`rerec train`: GRPO with dual-graph rewards, RAAE and the online curriculum."""

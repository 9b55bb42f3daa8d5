"""`rerec recommend`: answer one free-text request against a graph with a policy."""

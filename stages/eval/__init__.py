"""`rerec eval`: a policy, a base model or a baseline on a query split, with metrics and
rollouts."""

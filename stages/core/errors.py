"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input, a missing artifact, an impossible option: say what, where and what to do."""

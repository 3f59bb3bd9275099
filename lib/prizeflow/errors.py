"""The error every layer raises for a reason the user can act on (its message says which)."""

from __future__ import annotations


class JobError(RuntimeError):
    """A job failed for a reason the user can act on; the message says which."""

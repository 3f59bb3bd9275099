"""The commands: ``main(step, argv)`` runs one step of :mod:`prizeflow.steps` as a job (the
``prizeflow`` console script and the ``jobs/<step>.py`` spark-submit files call it)."""

from prizeflow.jobs.common import main

__all__ = ["main"]

"""What every job shares: ``--conf``/``--set`` arguments, logging to stderr, config validation,
the SparkSession, and the contract that the last stdout line is one JSON summary object and a
failure exits non-zero with one line naming the cause."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Callable

import prizeflow
from prizeflow import progress
from prizeflow.config import Config, ConfigError, changes, describe, load_config
from prizeflow.errors import JobError, one_line
from prizeflow.secrets import RedactingFilter, redact_text

logger = logging.getLogger(__name__)

DEFAULT_CONF = "conf/local.yaml"
__all__ = ["JobError", "add_source_arguments", "make_parser", "resolve_config", "run_job",
           "run_step"]


def setup_logging(level: str | None = None) -> None:
    """Log to stderr at ``level`` (else ``PRIZEFLOW_LOG_LEVEL``, else INFO), secrets masked."""
    level = (level or os.environ.get("PRIZEFLOW_LOG_LEVEL", "INFO")).upper()
    root = logging.getLogger()
    if not any(getattr(h, "_prizeflow", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RedactingFilter())
        handler._prizeflow = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("py4j", "urllib3", "alembic", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def make_parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"prizeflow {command}", description=description)
    parser.add_argument("--conf", default=None,
                        help=f"YAML config file (default: {DEFAULT_CONF} when present)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="dotted.key=value", help="override a config key (repeatable)")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", dest="log_level", action="store_const",
                          const="DEBUG", help="log more (DEBUG: the resolved config, each step)")
    loudness.add_argument("-q", "--quiet", dest="log_level", action="store_const",
                          const="WARNING", help="log only warnings and errors")
    return parser


def add_source_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--source`` and ``--format``, shared by every command that ingests."""
    from prizeflow.formats import CHOICES

    parser.add_argument("--source", required=True, help="folder (or file) holding the corpus")
    parser.add_argument("--format", default="auto", choices=CHOICES)
    return parser


def resolve_config(conf_path: str | None, overrides: list[str]) -> Config:
    if conf_path is None and os.path.isfile(DEFAULT_CONF):
        conf_path = DEFAULT_CONF
    config = load_config(conf_path, overrides)
    # One line of what differs from the defaults; the whole resolved config goes to the MLflow
    # run (config.yaml) and, on request, to DEBUG.
    logger.info("config %s%s: %s", conf_path or "(built-in defaults)",
                f" + {len(overrides)} --set" if overrides else "", changes(config) or "defaults")
    logger.debug("resolved config:\n%s", describe(config))
    return config


STEP_ATTRIBUTE = "prizeflow_step"


def _where(exc: BaseException) -> str:
    step = getattr(exc, STEP_ATTRIBUTE, None)
    return f"step {step}: " if step else ""


def run_step(name: str, task: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """One step of a larger run (``prizeflow run``, a notebook): its summary, named and timed."""
    logger.info("step %s", name)
    started, clock = time.time(), time.monotonic()
    try:
        with progress.step(name):
            summary = task(*args)
    except Exception as exc:
        # The innermost step is the one that failed; run_job puts its name on the error line.
        if not hasattr(exc, STEP_ATTRIBUTE):
            setattr(exc, STEP_ATTRIBUTE, name)
        raise
    return {"command": name, **summary, "started": round(started, 3),
            "seconds": round(time.monotonic() - clock, 3)}


def run_job(command: str, parser: argparse.ArgumentParser,
            task: Callable[[Any, Config, argparse.Namespace], dict[str, Any]],
            argv: list[str] | None, needs_spark: bool = True,
            precheck: Callable[[Config, argparse.Namespace], None] | None = None,
            needs_mlflow: bool = False) -> int:
    """Parse arguments, run ``task(spark, config, args)``, print its summary as JSON.

    ``precheck(config, args)`` runs before the SparkSession is built, so mistakes that need no
    JVM to see (a missing source folder) fail in a second rather than after Spark's start-up;
    so does the check that the MLflow servers answer (``needs_mlflow``)."""
    setup_logging()
    args = parser.parse_args(argv)
    if getattr(args, "log_level", None):
        setup_logging(args.log_level)
    started = time.monotonic()
    # Which copy of the code runs matters on clusters (an installed wheel, a --py-files zip).
    logger.info("prizeflow %s %s from %s", prizeflow.__version__, command,
                os.path.dirname(prizeflow.__file__))
    try:
        config = resolve_config(args.conf, args.overrides)
        if precheck is not None:
            precheck(config, args)
        if needs_mlflow:
            from prizeflow.tracking import check_reachable

            check_reachable(config)
        spark = None
        if needs_spark:
            from prizeflow.spark import get_spark

            spark = get_spark(config)
        try:
            with progress.step(command), progress.Heartbeat(spark):
                summary = task(spark, config, args)
        finally:
            from prizeflow.spark import release

            release(spark)
    except (ConfigError, JobError, ValueError, FileNotFoundError) as exc:
        logger.debug("prizeflow %s failed", command, exc_info=True)
        print(redact_text(f"prizeflow {command}: error: {_where(exc)}{exc}"), file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the contract is one line naming the cause
        logger.error("prizeflow %s failed unexpectedly", command, exc_info=True)
        print(redact_text(f"prizeflow {command}: error: {_where(exc)}{one_line(exc)}"),
              file=sys.stderr)
        return 1
    summary = {"command": command, **summary, "seconds": round(time.monotonic() - started, 3)}
    sys.stdout.write(redact_text(json.dumps(summary, sort_keys=False)) + "\n")
    sys.stdout.flush()
    return 0

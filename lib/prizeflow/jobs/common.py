"""What every job shares: ``--conf``/``--set`` arguments and each step's options from the step
table (:mod:`prizeflow.steps`), logging to stderr, config validation, the SparkSession, and the
contract that the last stdout line is one JSON summary object and a failure exits non-zero with
one line naming the cause."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from typing import Any, Callable

import prizeflow
from prizeflow import pipeline, progress
from prizeflow.config import Config, ConfigError, changes, describe, load_config
from prizeflow.errors import JobError, one_line
from prizeflow.pipeline import STEP_ATTRIBUTE
from prizeflow.secrets import RedactingFilter, redact_text
from prizeflow.spark import get_spark, release
from prizeflow.steps import STEPS, Step
from prizeflow.tracking import check_reachable

logger = logging.getLogger(__name__)

DEFAULT_CONF = "conf/local.yaml"
__all__ = ["JobError", "build_parser", "main", "make_parser", "resolve_config", "run_job"]


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


def _choices(reference: str) -> tuple:
    module, name = reference.split(":")
    return tuple(getattr(importlib.import_module(module), name))


def build_parser(name: str) -> argparse.ArgumentParser:
    """``prizeflow <name>``'s parser: the common options and the step's own, from the table."""
    step = STEPS[name]
    parser = make_parser(name, step.description)
    for option in step.all_options():
        if option.type is bool:
            parser.add_argument(option.flag, dest=option.dest, action="store_true",
                                help=option.help)
            continue
        extra = f" (default: {option.default})" if option.default is not None else ""
        parser.add_argument(option.flag, dest=option.dest, type=option.type,
                            default=option.default, required=option.required,
                            choices=_choices(option.choices) if option.choices else None,
                            metavar=option.metavar, help=option.help + extra)
    return parser


def _inputs(step: Step, args: argparse.Namespace) -> dict[str, Any]:
    return {option.dest: getattr(args, option.dest) for option in step.all_options()}


def main(name: str, argv: list[str] | None = None) -> int:
    """``prizeflow <name> [options]``: the step's function from :mod:`prizeflow.pipeline`, its
    check before Spark starts, and Spark and MLflow as the table says it needs them."""
    step = STEPS[name]
    task = pipeline.step_function(name)
    check, answer = pipeline.precheck(name), pipeline.answer(name)
    return run_job(
        name, build_parser(name),
        lambda spark, config, args: task(spark, config, **_inputs(step, args)), argv,
        needs_spark=step.spark is True,
        precheck=(lambda config, args: check(config, **_inputs(step, args))) if check else None,
        needs_mlflow=step.mlflow,
        answer=(lambda config, args: answer(config, **_inputs(step, args))) if answer else None)


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


def _where(exc: BaseException) -> str:
    step = getattr(exc, STEP_ATTRIBUTE, None)
    return f"step {step}: " if step else ""


def run_job(command: str, parser: argparse.ArgumentParser,
            task: Callable[[Any, Config, argparse.Namespace], dict[str, Any]],
            argv: list[str] | None, needs_spark: bool = True,
            precheck: Callable[[Config, argparse.Namespace], None] | None = None,
            needs_mlflow: bool = False,
            answer: Callable[[Config, argparse.Namespace], dict[str, Any] | None] | None = None
            ) -> int:
    """Parse arguments, run ``task(spark, config, args)``, print its summary as JSON.

    ``precheck(config, args)`` runs before the SparkSession is built, so mistakes that need no
    JVM to see (a missing source folder) fail in a second rather than after Spark's start-up;
    so does the check that the MLflow servers answer (``needs_mlflow``). ``answer(config, args)``
    may give the summary without Spark (a step with nothing to do); then Spark never starts."""
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
            check_reachable(config)
        summary = answer(config, args) if answer is not None else None
        if summary is None:
            spark = get_spark(config) if needs_spark else None
            try:
                with progress.step(command), progress.Heartbeat(spark):
                    summary = task(spark, config, args)
            finally:
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

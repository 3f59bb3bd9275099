"""The pipeline's steps as library functions with one signature, and ``run``, the whole pipeline.

Each step of :data:`prizeflow.steps.STEPS` is the function of the same name here, called as
``step(spark, config, **inputs) -> summary``; ``check_<step>(config, **inputs)``, where there is
one, runs before Spark starts, so mistakes that need no JVM to see fail in a second; and
``answer_<step>(config, **inputs)``, where there is one, gives the step's summary without Spark
when there is nothing for it to do (None: run the step).

    summary = pipeline.run(spark, config, source="demo/corpus")   # ingest -> train -> register

The work itself is in the modules named in each docstring; only this module knows the order.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from prizeflow import blending, ingestion, lake, predicting, progress, recommending, registry
from prizeflow import generate as corpus
from prizeflow import training
from prizeflow.config import Config
from prizeflow.errors import JobError
from prizeflow.steps import RUN, STEPS

logger = logging.getLogger(__name__)

STEP_ATTRIBUTE = "prizeflow_step"


def generate(spark, config: Config, out: str, ratings: int, users: int | None = None,
             movies: int | None = None, seed: int = 0,
             layout: str = "training_set") -> dict[str, Any]:
    """A synthetic corpus in the Netflix Prize layout (:mod:`prizeflow.generate`); no Spark."""
    return corpus.generate_corpus(corpus.make_spec(out, ratings, users, movies, seed, layout))


def check_ingest(config: Config, source: str, fmt: str = "auto") -> None:
    ingestion.check_source(config, source, fmt)
    lake.check_writable(config)


def answer_ingest(config: Config, source: str, fmt: str = "auto") -> dict[str, Any] | None:
    """Nothing new or changed in the source, seen without starting the JVM
    (:func:`prizeflow.ingestion.summary_without_spark`)."""
    return ingestion.summary_without_spark(config, source, fmt)


def ingest(spark, config: Config, source: str, fmt: str = "auto") -> dict[str, Any]:
    """New or changed corpus files into the Delta tables (:func:`prizeflow.ingestion.ingest`)."""
    return ingestion.ingest(spark, config, source, fmt)


def check_train(config: Config, pipeline_run: str | None = None) -> None:
    lake.check_ingested(config)


def train(spark, config: Config, pipeline_run: str | None = None) -> dict[str, Any]:
    """The ALS grid and the blend, tracked in one MLflow run (:func:`prizeflow.training.train`)."""
    return training.train(spark, config, pipeline_run=pipeline_run).summary()


def check_register(config: Config, run_id: str | None = None,
                   pipeline_run: str | None = None) -> None:
    if run_id is not None and pipeline_run is not None:
        raise JobError("--run-id and --pipeline-run each choose the run to register: give one")


def register(spark, config: Config, run_id: str | None = None,
             pipeline_run: str | None = None) -> dict[str, Any]:
    """A train run's model into the registry, gated (:func:`prizeflow.registry.register`).
    ``spark`` may be None: a session starts only if the champion must be re-scored."""
    return registry.register(spark, config, run_id, pipeline_run=pipeline_run)


def check_blend(config: Config, versions: str) -> None:
    blending.check_blend(config, versions)


def blend(spark, config: Config, versions: str) -> dict[str, Any]:
    """Registered versions blended into one model, gated (:func:`prizeflow.blending.blend`)."""
    return blending.blend(spark, config, versions)


def check_recommend(config: Config, top: int = 10, alias: str = "champion") -> None:
    recommending.check_top(top)
    lake.check_ingested(config)


def recommend(spark, config: Config, top: int = 10, alias: str = "champion") -> dict[str, Any]:
    """The champion's top-N unseen movies per user (:func:`prizeflow.recommending.recommend`)."""
    return recommending.recommend(spark, config, top, alias)


def check_predict(config: Config, qualifying: bool = False, pairs: str | None = None,
                  out: str | None = None, out_table: str | None = None,
                  alias: str = "champion") -> None:
    predicting.check_request(qualifying, pairs, out, out_table)
    lake.check_ingested(config)


def predict(spark, config: Config, qualifying: bool = False, pairs: str | None = None,
            out: str | None = None, out_table: str | None = None,
            alias: str = "champion") -> dict[str, Any]:
    """The champion's predictions for the qualifying pairs (the Prize's file) or for a table of
    pairs (:func:`prizeflow.predicting.predict`)."""
    return predicting.predict(spark, config, qualifying, pairs, out, out_table, alias)


check_run = check_ingest


def run(spark, config: Config, source: str, fmt: str = "auto") -> dict[str, Any]:
    """ingest -> train -> register in ``spark``. The summary has the register fields at the top
    level (model_name, version, alias, test_rmse, lift_pct) and each step's own summary under
    its name. A failing step stops the run; the error names the step."""
    inputs = {"source": source, "fmt": fmt}
    done: dict[str, dict[str, Any]] = {}
    for name in RUN:
        if name == "register":
            # The model this run trained, not the latest of whoever trained since.
            step_inputs = {"run_id": done["train"]["run_id"]}
        else:
            step_inputs = {k: v for k, v in inputs.items()
                           if k in {o.dest for o in STEPS[name].all_options()}}
        done[name] = run_step(name, spark, config, **step_inputs)
    registered = done["register"]
    top = {k: registered[k] for k in ("model_name", "version", "alias", "test_rmse",
                                      "champion_rmse_before", "lift_pct")}
    return {**top, **done}


def step_function(name: str) -> Callable[..., dict[str, Any]]:
    if name not in STEPS:
        raise ValueError(f"unknown step {name!r}: one of {', '.join(STEPS)}")
    return globals()[name]


def precheck(name: str) -> Callable[..., None] | None:
    return globals().get(f"check_{name}")


def answer(name: str) -> Callable[..., dict[str, Any] | None] | None:
    return globals().get(f"answer_{name}")


def run_step(name: str, spark, config: Config, **inputs: Any) -> dict[str, Any]:
    """One step of a larger run (``run``, a notebook): its summary, named and timed."""
    task = step_function(name)
    logger.info("step %s", name)
    started, clock = time.time(), time.monotonic()
    try:
        with progress.step(name):
            summary = task(spark, config, **inputs)
    except Exception as exc:
        # The innermost step is the one that failed; the job puts its name on the error line.
        if not hasattr(exc, STEP_ATTRIBUTE):
            setattr(exc, STEP_ATTRIBUTE, name)
        raise
    return {"command": name, **summary, "started": round(started, 3),
            "seconds": round(time.monotonic() - clock, 3)}

"""The step table: every command prizeflow runs, listed once, with its inputs and options.

Everything that runs a step takes it from here: the console script and the spark-submit files
(:mod:`prizeflow.jobs`), ``prizeflow run`` (:func:`prizeflow.pipeline.run`), the notebooks
(:func:`prizeflow.notebook.run_step`), the Airflow DAG's task arguments
(:func:`cli_arguments`) and the Databricks bundle's task parameters (checked by a test). Each
step is the function of the same name in :mod:`prizeflow.pipeline`, called as
``step(spark, config, **inputs)``; its inputs are the options below, by ``dest``.

Standard library only: the Airflow DAG loads this file by its path, in a virtualenv that has no
prizeflow and no pyspark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Option:
    """One command-line option of a step; ``dest`` is the step function's keyword."""

    flag: str
    dest: str
    help: str
    type: type = str  # bool: a switch (store_true)
    default: Any = None
    required: bool = False
    # A "module:NAME" reference to a tuple of allowed values (resolved where argparse is built,
    # so this table imports nothing).
    choices: str | None = None
    metavar: str | None = None


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    options: tuple[Option, ...] = ()
    # False: Spark never starts. "lazy": the step starts it itself when it must (register
    # re-scores the champion only on a different test set).
    spark: bool | str = True
    mlflow: bool = False  # the tracking server must answer before anything starts
    options_from: tuple[str, ...] = field(default=())

    def all_options(self) -> tuple[Option, ...]:
        inherited = tuple(o for name in self.options_from for o in STEPS[name].options)
        return inherited + self.options


SOURCE = Option("--source", "source", "folder (or file) holding the corpus", required=True)
FORMAT = Option("--format", "fmt", "source format", default="auto",
                choices="prizeflow.formats:CHOICES")
PIPELINE_RUN = Option("--pipeline-run", "pipeline_run",
                      "a scheduler's run id: train tags its run with it and register takes the "
                      "latest train run tagged with it (the Airflow DAG and the bundle pass "
                      "their run id to both)", metavar="ID")
ALIAS = Option("--alias", "alias", "registered model alias to use", default="champion")

STEPS: dict[str, Step] = {step.name: step for step in (
    Step("generate", "Write a synthetic Netflix-Prize-layout corpus.", (
        Option("--out", "out", "output folder", required=True),
        Option("--ratings", "ratings", "number of ratings", type=int, required=True),
        Option("--users", "users", "users (default: scaled like Netflix)", type=int),
        Option("--movies", "movies", "movies (default: scaled like Netflix)", type=int),
        Option("--seed", "seed", "random seed", type=int, default=0),
        Option("--layout", "layout", "file layout", default="training_set",
               choices="prizeflow.generate:LAYOUTS")), spark=False),
    Step("ingest", "Ingest Netflix Prize or MovieLens files into Delta tables.",
         (SOURCE, FORMAT)),
    Step("train", "Train the ALS grid on the ratings table and track it in MLflow.",
         (PIPELINE_RUN,), mlflow=True),
    Step("register", "Register the latest trained model; gate champion vs challenger.", (
        Option("--run-id", "run_id", "train run to register (default: the latest)"),
        PIPELINE_RUN), spark="lazy", mlflow=True),
    Step("blend", "Blend registered model versions into one model and gate it.", (
        Option("--versions", "versions", "registered versions to blend, e.g. 3,5 (one data "
               "version and split, trained without a refit on validation)", required=True,
               metavar="N,N[,...]"),), mlflow=True),
    Step("recommend", "Write top-N recommendations per user from the champion into Delta.", (
        Option("--top", "top", "movies per user", type=int, default=10),
        ALIAS),
         mlflow=True),
    Step("predict", "Predict the qualifying pairs (the Prize's file) or a table of pairs.", (
        Option("--qualifying", "qualifying", "the lake's qualifying pairs", type=bool,
               default=False),
        Option("--pairs", "pairs", "a Delta table with user_id and movie_id columns",
               metavar="TABLE"),
        Option("--out", "out", "the Prize's submission file (with --qualifying)",
               metavar="FILE"),
        Option("--out-table", "out_table", "a Delta table of the pairs and their predictions",
               metavar="PATH"),
        ALIAS),
         mlflow=True),
    Step("run", "The whole pipeline: ingest, train, register.", options_from=("ingest",),
         mlflow=True),
)}

# What `prizeflow run` does in one session, and what a scheduled pipeline (the Airflow DAG, the
# Databricks bundle's job) runs as separate tasks.
RUN = ("ingest", "train", "register")
SCHEDULED = ("ingest", "train", "register", "recommend")


def cli_arguments(step: str, inputs: dict[str, Any]) -> list[str]:
    """``--flag value`` for each of ``step``'s options found in ``inputs`` (by dest) and not
    None; inputs the step does not take are left out, so one dict serves every step."""
    arguments: list[str] = []
    for option in STEPS[step].all_options():
        value = inputs.get(option.dest)
        if option.type is bool:  # a switch: present or not
            arguments += [option.flag] if value else []
        elif value is not None:
            arguments += [option.flag, str(value)]
    return arguments

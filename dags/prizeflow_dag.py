"""prizeflow on Airflow 3: ingest -> train -> register -> recommend, each a spark-submit.

Airflow runs in its own virtualenv (`make airflow`; never in the pipeline's venv, because the
Spark provider's `pyspark-client` replaces pyspark's files). This file imports nothing from
prizeflow: every task is `spark-submit <PRIZEFLOW_HOME>/jobs/<step>.py --conf <conf> ...`.

What the Airflow worker needs in its environment:
- `spark-submit` on PATH, with SPARK_HOME and PYSPARK_PYTHON pointing at the pipeline's venv
  (or a cluster's Spark client);
- PRIZEFLOW_HOME: the folder holding `jobs/`, `conf/` and `lib/prizeflow/steps.py` (default:
  this file's parent folder's parent, i.e. a checkout of the project);
- an Airflow connection `prizeflow_spark` (or PRIZEFLOW_SPARK_CONN_ID) whose host is the master,
  e.g. AIRFLOW_CONN_PRIZEFLOW_SPARK='{"conn_type": "spark", "host": "local[2]"}' or
  host `spark://spark-master` with port 7077, or `yarn`.
Optional: PRIZEFLOW_SCHEDULE (default @daily), PRIZEFLOW_DELTA_PACKAGE, PRIZEFLOW_PY_FILES (the
`make dist` zip, for clusters without the wheel installed).

Run parameters (trigger with a conf JSON): `conf` (YAML path), `source` (corpus folder),
`overrides` (list of `key=value` config overrides), `top` (recommendations per user). `conf` must
be a file in the deployment's config folder and `overrides` may set only tuning keys unless the
deployment allows more (PRIZEFLOW_DAG_CONF_DIR, PRIZEFLOW_DAG_ALLOWED_OVERRIDES: see
`prizeflow_params.py`): a trigger cannot point the pipeline at another tracking server or lake.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Param


def _load_by_path(name: str, path: Path):
    """A module loaded from its file: Airflow does not promise that the DAG folder is on
    sys.path, and prizeflow itself is not installed in Airflow's virtualenv."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


PRIZEFLOW_HOME = Path(os.environ.get("PRIZEFLOW_HOME", Path(__file__).resolve().parents[1]))
_params = _load_by_path("prizeflow_params", Path(__file__).resolve().with_name("prizeflow_params.py"))
check_conf, check_overrides = _params.check_conf, _params.check_overrides
# The step table (standard library only): each step's options, the scheduled order.
steps = _load_by_path("prizeflow_steps", PRIZEFLOW_HOME / "lib" / "prizeflow" / "steps.py")
CONN_ID = os.environ.get("PRIZEFLOW_SPARK_CONN_ID", "prizeflow_spark")
# Must match prizeflow.spark.delta_package for the pipeline's pyspark (a test checks it).
DELTA_PACKAGE = os.environ.get("PRIZEFLOW_DELTA_PACKAGE", "io.delta:delta-spark_4.2_2.13:4.4.0")
PY_FILES = os.environ.get("PRIZEFLOW_PY_FILES") or None


def job_arguments(step: str, params: dict, run_id: str = "") -> list[str]:
    """The arguments after `jobs/<step>.py`: the conf, the step's own options, the overrides.
    train tags its MLflow run with the DAG run's id and register takes the run with that tag,
    so a DAG run registers the model its own train task made."""
    arguments = ["--conf", check_conf(str(params["conf"]), PRIZEFLOW_HOME)]
    arguments += steps.cli_arguments(step, {"source": params["source"], "pipeline_run": run_id,
                                            "top": params["top"]})
    for assignment in check_overrides(params.get("overrides")):
        arguments += ["--set", assignment]
    return arguments


STEP_DOCS = {
    "ingest": "Reads new or changed corpus files from `source` into the Delta tables; unchanged "
              "files are skipped, bad lines go to `quarantine` with a reason.",
    "train": "Splits `ratings` (probe or hash holdout), scores the baselines, fits the ALS grid "
             "in parallel and logs the best model to MLflow with its lift.",
    "register": "Registers the model this DAG run's train task made; `champion` moves only on a "
                "lower test RMSE on the same test set, else the version becomes `challenger`.",
    "recommend": "Writes the champion's top-N unseen movies per user to the Delta table "
                 "`recommendations`.",
}

with DAG(
    dag_id="prizeflow",
    description="Ratings corpus -> Delta -> ALS grid -> MLflow registry -> recommendations",
    doc_md=__doc__,
    schedule=os.environ.get("PRIZEFLOW_SCHEDULE", "@daily"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # Two runs at once would write the same Delta tables and race for the champion alias.
    max_active_runs=1,
    default_args={
        "owner": "prizeflow",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=12),
    },
    params={
        "conf": Param(str(PRIZEFLOW_HOME / "conf" / "local.yaml"), type="string",
                      description="prizeflow YAML config for the environment"),
        "source": Param(str(PRIZEFLOW_HOME / "demo" / "corpus"), type="string",
                        description="folder holding the ratings corpus"),
        "overrides": Param([], type="array", items={"type": "string"},
                           description="config overrides, each `dotted.key=value`"),
        "top": Param(10, type="integer", minimum=1, description="recommendations per user"),
    },
    # application_args below renders to a list, not to the text of one.
    render_template_as_native_obj=True,
    user_defined_macros={"job_arguments": job_arguments},
    tags=["prizeflow", "spark", "mlflow"],
) as dag:
    previous = None
    for step in steps.SCHEDULED:
        task = SparkSubmitOperator(
            task_id=step,
            doc_md=STEP_DOCS[step],
            conn_id=CONN_ID,
            application=str(PRIZEFLOW_HOME / "jobs" / f"{step}.py"),
            application_args="{{ job_arguments('%s', params, run_id) }}" % step,
            packages=DELTA_PACKAGE,
            py_files=PY_FILES,
            name=f"prizeflow-{step}",
            env_vars={"PRIZEFLOW_LOG_LEVEL": "INFO"},
            verbose=False,
        )
        if previous is not None:
            previous >> task
        previous = task

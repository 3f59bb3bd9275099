# Databricks notebook source
# MAGIC %md
# MAGIC # prizeflow 3/3: register
# MAGIC Registers a training run's model under `mlflow.registered_model` and moves the `champion`
# MAGIC alias only when its test RMSE beats the current champion's on the same test set (else it
# MAGIC becomes `challenger`): the same code as `prizeflow register`.
# MAGIC
# MAGIC Widgets:
# MAGIC - `conf`: a profile in `conf/` or a YAML path
# MAGIC - `run_id`: the training run to register (empty = the latest finished one)
# MAGIC - `overrides`: `key=value` config overrides

# COMMAND ----------

from prizeflow import notebook

try:
    dbutils, display  # noqa: F821 - provided by Databricks
except NameError:
    dbutils, display = notebook.local_dbutils(), notebook.display

params = notebook.read_widgets(
    dbutils, {"conf": notebook.default_conf(), "run_id": "", "overrides": ""},
    required=("conf",))
config = notebook.notebook_config(params["conf"], params["overrides"])

# COMMAND ----------

# Spark starts only if the champion must be re-scored on a new test set.
summary = notebook.run_step("register", None, config, run_id=params["run_id"] or None)
display(notebook.summary_table(summary))

# COMMAND ----------

import json

dbutils.notebook.exit(json.dumps(summary))

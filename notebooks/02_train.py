# Databricks notebook source
# MAGIC %md
# MAGIC # prizeflow 2/3: train
# MAGIC Splits the Delta `ratings` table (the Netflix probe when present, else a hash or per-user
# MAGIC chronological holdout), scores the baselines, fits ALS on the residuals of
# MAGIC mu + b_u + b_i over the configured grid in parallel, refits the best point and records
# MAGIC everything in MLflow: the same code as `prizeflow train`.
# MAGIC
# MAGIC Widgets:
# MAGIC - `conf`: a profile in `conf/` or a YAML path
# MAGIC - `data_version`: Delta version of `ratings` to train on (empty = latest)
# MAGIC - `overrides`: `key=value` config overrides (for example `train.grid.rank=[20,50]`)

# COMMAND ----------

from prizeflow import notebook

try:
    dbutils, display  # noqa: F821 - provided by Databricks
except NameError:
    dbutils, display = notebook.local_dbutils(), notebook.display

params = notebook.read_widgets(
    dbutils, {"conf": notebook.default_conf(), "data_version": "", "overrides": ""},
    required=("conf",))
if params["data_version"] and not params["data_version"].isdigit():
    raise ValueError(f"widget 'data_version' must be a Delta version number, got {params['data_version']!r}")
overrides = params["overrides"]
if params["data_version"]:
    overrides += f"\ndata.version={params['data_version']}"
config = notebook.notebook_config(params["conf"], overrides)

# COMMAND ----------

spark = notebook.spark_session(config)
summary = notebook.run_step("train", spark, config)
display(notebook.summary_table(summary))

# COMMAND ----------

import json

dbutils.notebook.exit(json.dumps(summary))

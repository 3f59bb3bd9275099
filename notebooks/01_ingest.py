# Databricks notebook source
# MAGIC %md
# MAGIC # prizeflow 1/3: ingest
# MAGIC Reads a ratings corpus (Netflix Prize layout or MovieLens 100K / 1M-10M / 20M+) into the Delta
# MAGIC tables `ratings`, `movies`, `probe`, `qualifying` and `quarantine` under `lake.root`: the same
# MAGIC code as `prizeflow ingest`. Every input line is accounted for; bad lines go to `quarantine`
# MAGIC with a reason. Unchanged files are skipped, so running it twice commits nothing new.
# MAGIC
# MAGIC Needs the prizeflow wheel (`make dist`) installed on the cluster. Widgets:
# MAGIC - `source`: folder (or volume path) holding the corpus (required)
# MAGIC - `format`: `auto` or one of the source formats
# MAGIC - `conf`: a profile in `conf/` (`databricks`, `local`, ...) or a YAML path
# MAGIC - `overrides`: `key=value` config overrides, one per line or separated by `;`

# COMMAND ----------

from prizeflow import notebook
from prizeflow.formats import CHOICES

try:
    dbutils, display  # noqa: F821 - provided by Databricks
except NameError:
    dbutils, display = notebook.local_dbutils(), notebook.display

params = notebook.read_widgets(
    dbutils,
    {"source": "", "format": "auto", "conf": notebook.default_conf(), "overrides": ""},
    choices={"format": list(CHOICES)},
    required=("source", "conf"))
config = notebook.notebook_config(params["conf"], params["overrides"])

# COMMAND ----------

spark = notebook.spark_session(config)
summary = notebook.run_step("ingest", spark, config, source=params["source"],
                            fmt=params["format"])
display(notebook.summary_table(summary))

# COMMAND ----------

# MAGIC %md
# MAGIC The summary above is also this notebook's exit value, for a Databricks job's next task.

# COMMAND ----------

import json

dbutils.notebook.exit(json.dumps(summary))

# Databricks notebook source
# MAGIC %md
# MAGIC # prizeflow: explore
# MAGIC What is in the lake and what training found: the rating distribution of `ratings`, the
# MAGIC validation RMSE over a training run's grid, and the model's test RMSE and lift against the
# MAGIC baselines (lift = (baseline - model) / baseline; the Prize asked for 10% over Cinematch).
# MAGIC
# MAGIC Widgets:
# MAGIC - `conf`: a profile in `conf/` or a YAML path
# MAGIC - `run_id`: the training run to look at (empty = the latest finished one)
# MAGIC - `overrides`: `key=value` config overrides

# COMMAND ----------

from mlflow.tracking import MlflowClient

from prizeflow import explore, notebook, registry, snapshots, tracking

try:
    dbutils, display  # noqa: F821 - provided by Databricks
except NameError:
    dbutils, display = notebook.local_dbutils(), notebook.display

params = notebook.read_widgets(
    dbutils, {"conf": notebook.default_conf(), "run_id": "", "overrides": ""},
    required=("conf",))
config = notebook.notebook_config(params["conf"], params["overrides"])

# COMMAND ----------

# MAGIC %md
# MAGIC ## Ratings

# COMMAND ----------

spark = notebook.spark_session(config)
# As the last complete ingest left it: never half of an ingest that is running now.
ratings = snapshots.for_reading(spark, config.lake.root).read(spark, config.lake.root, "ratings")
distribution = explore.rating_distribution(ratings).toPandas()
display(distribution)
display(explore.rating_histogram(distribution))

# COMMAND ----------

# MAGIC %md
# MAGIC ## The training run: grid and lift

# COMMAND ----------

experiment_id = tracking.configure(config)
client = MlflowClient()
run = (registry.train_run(client, params["run_id"]) if params["run_id"]
       else registry.latest_train_run(client, experiment_id))
outcome = explore.training_outcome(client, run)
display(notebook.summary_table({"run_id": outcome.run_id, "test_rmse": outcome.test_rmse,
                                "baseline_rmse": outcome.baselines, "lift_pct": outcome.lift_pct}))
for kind in sorted({result.point.kind for result in outcome.grid}):
    display(tracking.grid_heatmap(outcome.grid, kind))
display(tracking.model_vs_baselines(outcome.test_rmse, outcome.baselines))
display(explore.lift_bars(outcome.lift_pct))

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

from prizeflow import explore, notebook, plots, snapshots, tracking, train_runs

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
display(plots.rating_histogram(distribution))

# COMMAND ----------

# MAGIC %md
# MAGIC ## The training run: grid and lift

# COMMAND ----------

experiment_id = tracking.configure(config)
client = MlflowClient()
run = (train_runs.get(client, params["run_id"]) if params["run_id"]
       else train_runs.latest(client, experiment_id))
display(notebook.summary_table({"run_id": run.run_id, "test_rmse": run.test_rmse,
                                "baseline_rmse": run.baselines, "lift_pct": run.lift_pct,
                                "baselines_left_out": run.baselines_left_out}))
points = run.points(client)
for kind in sorted({result.point.kind for result in points}):
    display(plots.grid_heatmap(points, kind))
display(plots.model_vs_baselines(run.test_rmse, run.baselines))
display(plots.lift_bars(run.lift_pct))

"""prizeflow: Netflix-Prize-scale rating prediction on Spark, Delta Lake and MLflow."""

__version__ = "0.1.0"

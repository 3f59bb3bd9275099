"""prizeflow: Netflix-Prize-scale rating prediction on Spark MLlib, Delta Lake and MLflow."""

from setuptools import find_packages, setup

# [connect]: the Spark Connect client (grpcio, ...), for `spark.remote`.
SPARK = ["pyspark[connect]==4.2.0", "delta-spark==4.4.0"]
MLFLOW = ["mlflow==3.17.2", "pandas>=2.2,<3", "matplotlib>=3.8"]
# databricks-sdk: tests/test_bundle.py checks the Databricks Asset Bundle's job against its types.
DEV = ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.6", "databricks-sdk>=0.162,<1"]

setup(
    name="prizeflow",
    version="0.1.0",
    description="Ratings corpus -> Delta tables -> Spark ALS grid -> MLflow registry",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    python_requires=">=3.11",
    install_requires=["pyyaml>=6", "numpy>=1.26", "pydantic>=2.7,<3"],
    extras_require={"spark": SPARK, "mlflow": MLFLOW, "dev": DEV, "all": SPARK + MLFLOW + DEV},
    entry_points={"console_scripts": ["prizeflow=prizeflow.cli:entry_point"]},
)

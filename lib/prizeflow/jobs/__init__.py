"""Job entry points: each module has ``main(argv=None)`` (console script and spark-submit file)
and a ``run(spark, config, args)`` task that receives its SparkSession and config."""

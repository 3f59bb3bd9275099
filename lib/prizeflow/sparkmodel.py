"""The trained model as a Spark ML ``PipelineModel``, for batch scoring at scale (``mlflow.spark``).

Built from the same arrays as the pyfunc, so both predict the same numbers. The bias lookups
are ALS models too, with one-dimensional factors against a constant id 0: an ALS model
predicts NaN for an id it does not know, which is exactly the fall-back the pyfunc applies
(an unknown user or movie contributes nothing). Stages:

1. ``SELECT *, 0 AS _pf_zero``;
2. user biases: ALS(user_id x _pf_zero), user factor [b_u], item 0 factor [1];
3. movie biases: ALS(_pf_zero x movie_id), user 0 factor [1], item factor [b_i];
4. the factors: ALS(user_id x movie_id), p_u . q_i;
5. ``prediction``: the model's rule without the neighbour term (:meth:`prizeflow.rule.Rule.sql`
   of ``FactorModel.rule``), over baseline = mu + b_u + b_i and factor_term = p.q with NaN
   lookups as 0 (plain kind: p.q where ALS knows both ids, else mu); helper columns dropped.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.ml.feature import SQLTransformer
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import SparkSession

from prizeflow.columns import MOVIE_ID, USER_ID
from prizeflow.factors import FactorModel
from prizeflow.rule import BASELINE, FACTOR, HAS_FACTORS

ZERO, USER_BIAS, MOVIE_BIAS, DOT = "_pf_zero", "_pf_bu", "_pf_bi", "_pf_dot"


def _factor_frame(spark: SparkSession, ids: np.ndarray, vectors: np.ndarray):
    frame = pd.DataFrame({"id": ids.astype("int32"),
                          "features": [row.astype(np.float32).tolist() for row in vectors]})
    return spark.createDataFrame(frame, "id int, features array<float>")


def _als_model(spark: SparkSession, uid: str, users, items, rank: int, user_col: str,
               item_col: str, prediction_col: str) -> ALSModel:
    # ALSModel's constructor is package-private in Scala, which is public on the JVM.
    java_model = spark._jvm.org.apache.spark.ml.recommendation.ALSModel(
        uid, rank, users._jdf, items._jdf)
    model = ALSModel(java_model)
    return (model.setUserCol(user_col).setItemCol(item_col).setPredictionCol(prediction_col)
            .setColdStartStrategy("nan"))


def _nan_as(column: str, default: str) -> str:
    return f"coalesce(nanvl(CAST({column} AS DOUBLE), CAST(NULL AS DOUBLE)), {default})"


def build(spark: SparkSession, model: FactorModel) -> PipelineModel:
    if model.time is not None:
        # Its stages see no rating day: every pair would be scored at one day, unlike the pyfunc.
        raise ValueError("a model with time effects has no Spark ML form (use the pyfunc)")
    zero = np.zeros(1, dtype=np.int64)
    one = np.ones((1, 1), dtype=np.float32)
    stages = [SQLTransformer(statement=f"SELECT *, 0 AS {ZERO} FROM __THIS__")]
    if model.kind != "plain":
        stages.append(_als_model(
            spark, "prizeflow_user_bias",
            _factor_frame(spark, model.user_ids, model.user_bias[:, None]),
            _factor_frame(spark, zero, one), 1, USER_ID, ZERO, USER_BIAS))
        stages.append(_als_model(
            spark, "prizeflow_movie_bias", _factor_frame(spark, zero, one),
            _factor_frame(spark, model.movie_ids, model.movie_bias[:, None]), 1, ZERO,
            MOVIE_ID, MOVIE_BIAS))
    stages.append(_als_model(
        spark, "prizeflow_factors",
        _factor_frame(spark, model.user_ids[model.user_has_factors],
                      model.user_factors[model.user_has_factors]),
        _factor_frame(spark, model.movie_ids[model.movie_has_factors],
                      model.movie_factors[model.movie_has_factors]),
        model.rank, USER_ID, MOVIE_ID, DOT))
    parts = {FACTOR: _nan_as(DOT, "0D"),
             HAS_FACTORS: f"nanvl(CAST({DOT} AS DOUBLE), CAST(NULL AS DOUBLE)) IS NOT NULL"}
    helpers = [ZERO, DOT]
    if model.kind != "plain":
        parts[BASELINE] = (f"{model.mean!r}D + {_nan_as(USER_BIAS, '0D')} + "
                           f"{_nan_as(MOVIE_BIAS, '0D')}")
        helpers = [ZERO, USER_BIAS, MOVIE_BIAS, DOT]
    # A PipelineModel stage cannot join each user's ratings: the rule without the neighbour term.
    rule = replace(model, neighbourhood=None).rule()
    stages.append(SQLTransformer(statement=(
        f"SELECT * EXCEPT ({', '.join(helpers)}), {rule.sql(parts)} AS prediction FROM __THIS__")))
    return PipelineModel(stages)

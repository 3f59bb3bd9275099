"""The prediction rule's three forms (numpy, Spark column, Spark SQL), generated from one
description, give the same numbers; and the model's rules are the documented ones."""

from dataclasses import replace

import numpy as np
import pytest

from prizeflow.rule import BASELINE, FACTOR, HAS_FACTORS, NEIGHBOUR, Rule

RULES = {
    "als": Rule(1.0, 5.0),
    "blend": Rule.linear([0.11, 0.93, 0.87, 0.42], 1.0, 5.0),
    "blend without history": Rule.linear([0.2, 0.95, 0.9], 1.0, 5.0),
    "half stars": Rule.linear([0.0, 1.0, 1.1, 0.3], 0.5, 5.0),
    "plain": Rule.plain(3.6, 1.0, 5.0),
}


def _parts(rows: int, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {BASELINE: rng.normal(3.6, 0.8, rows), FACTOR: rng.normal(0, 1.5, rows),
            NEIGHBOUR: rng.normal(0, 0.7, rows), HAS_FACTORS: rng.random(rows) < 0.8}


def test_linear_rules_add_weighted_parts_then_clip():
    parts = _parts(1000)
    rule = RULES["blend"]
    raw = 0.11 + 0.93 * parts[BASELINE] + 0.87 * parts[FACTOR] + 0.42 * parts[NEIGHBOUR]
    np.testing.assert_array_equal(rule.raw(parts), raw)
    np.testing.assert_array_equal(rule.evaluate(parts), np.clip(raw, 1.0, 5.0))
    assert rule.parts == (BASELINE, FACTOR, NEIGHBOUR)
    assert rule.without(NEIGHBOUR) == Rule.linear([0.11, 0.93, 0.87], 1.0, 5.0)
    np.testing.assert_array_equal(RULES["als"].raw(parts), parts[BASELINE] + parts[FACTOR])


def test_plain_rule_falls_back_to_the_mean_where_als_knows_nothing():
    parts = _parts(200)
    got = RULES["plain"].evaluate(parts)
    expected = np.clip(np.where(parts[HAS_FACTORS], parts[FACTOR], 3.6), 1.0, 5.0)
    np.testing.assert_array_equal(got, expected)
    assert RULES["plain"].parts == (FACTOR, HAS_FACTORS)


def test_too_many_weights_is_an_error():
    with pytest.raises(ValueError, match="7 weights"):
        Rule.linear([1, 2, 3, 4, 5, 6, 7], 1.0, 5.0)
    with pytest.raises(ValueError, match="5 weights"):
        Rule.linear([1, 2, 3, 4, 5], 1.0, 5.0, ("baseline", "factor_term", "neighbour_term"))


def test_a_models_rules_follow_its_kind_and_neighbourhood():
    from test_factors import _model, _neighbour_table  # a small model with a neighbourhood

    rng = np.random.default_rng(1)
    model = _model(rng, _neighbour_table(rng)[1])
    nb = model.neighbourhood
    assert model.rule(True) == Rule.linear(nb.weights, model.low, model.high)
    assert model.rule(False) == Rule.linear(nb.weights_without_history, model.low, model.high)
    assert replace(model, neighbourhood=None).rule() == Rule(model.low, model.high)
    plain = replace(model, kind="plain", neighbourhood=None)
    assert plain.rule() == Rule.plain(model.mean, model.low, model.high)


@pytest.mark.spark
@pytest.mark.parametrize("name", sorted(RULES))
def test_numpy_spark_and_sql_forms_agree(spark, name):
    rule = RULES[name]
    import pandas as pd

    parts = _parts(2000)
    frame = spark.createDataFrame(pd.DataFrame({k: v.astype(float) for k, v in parts.items()}))
    sql = rule.sql({BASELINE: BASELINE, FACTOR: FACTOR, NEIGHBOUR: NEIGHBOUR,
                    HAS_FACTORS: f"{HAS_FACTORS} > 0"})
    scored = frame.selectExpr("*", f"{sql} AS by_sql").withColumn("by_column", rule.column())
    result = scored.toPandas()
    expected = rule.evaluate({k: result[k].to_numpy() for k in parts})
    np.testing.assert_allclose(result["by_column"].to_numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["by_sql"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert expected.min() >= rule.low and expected.max() <= rule.high
    assert len(np.unique(expected)) > 100  # the parts moved the prediction, not only the clip

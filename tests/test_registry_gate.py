"""The champion gate on a real MLflow store (SQLite), without Spark: exact numbers, failed
lookups, which runs may be registered, a model worse than its baseline, and a register cut
short by a crash. The train runs are recorded as `prizeflow train` records them (tags, params,
metrics, a logged pyfunc); two faults are injected into single registry calls."""

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from prizeflow import gate, model_integrity, registry, tracking, train_runs
from prizeflow.grid import GridPoint, PointResult
from prizeflow.metrics import Errors, lift_pct
from prizeflow.config import load_config

from test_factors import _model

pytestmark = pytest.mark.mlflow

@pytest.fixture(scope="module")
def shared(tmp_path_factory, uses_mlflow):
    """One MLflow store and one logged pyfunc for the module; each test registers its own model
    name, so no test sees another's versions."""
    tmp = tmp_path_factory.mktemp("gate")
    config = load_config(None, [f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
                                f"lake.root={tmp / 'lake'}"])
    experiment_id = tracking.configure(config)
    with mlflow.start_run(experiment_id=experiment_id, run_name="model holder"):
        model_uri = tracking.log_factor_model(_model(np.random.default_rng(2))).model_uri
    return {"config": config, "experiment_id": experiment_id, "model_uri": model_uri,
            "digest": model_integrity.digest_of(model_uri)}


@pytest.fixture
def store(shared, request):
    name = f"gate-{request.node.name.removeprefix('test_')[:40]}"
    mlflow.set_tracking_uri(shared["config"].mlflow.tracking_uri)
    return {**shared, "config": shared["config"].override(f"mlflow.registered_model={name}"),
            "name": name, "client": MlflowClient()}


# One test set for every run here: the same lake, table, version and split.
SAME_DATA = gate.DataIdentity("/data/lake", "table-1", "/data/lake/ratings", 0, None, None, None)


def _record_train_run(store, identity: gate.DataIdentity, data_version: int, test_rmse: float,
                      bias_rmse: float, pipeline_run: str | None, digest: str | None) -> None:
    """Inside an active run: what `prizeflow train` records, through the same writers
    (prizeflow.train_runs, prizeflow.gate), with the given numbers."""
    train_runs.log_start("test-commit", identity.ratings_path, "split-1", pipeline_run)
    train_runs.log_model_uri(store["model_uri"])
    mlflow.log_params({"data_version": data_version,
                       model_integrity.DIGEST_PARAM: digest or store["digest"],
                       **identity.params("hash", {"seed": 42}), **gate.test_rmse_param(test_rmse)})
    chosen = PointResult(GridPoint("residual", 2, 0.1, 5, 3.0), 5, test_rmse, 1.0)
    errors = {name: Errors(test_rmse, test_rmse, 100) for name in train_runs.TEST_METRICS}
    train_runs.log_outcome(chosen, {"refit": True}, errors, {"bias": bias_rmse},
                           {"bias": lift_pct(bias_rmse, test_rmse)}, figures={})


def train_run(store, test_rmse: float, bias_rmse: float = 1.0, experiment_id=None,
              command: str = "train", pipeline_run: str | None = None,
              digest: str | None = None) -> str:
    """A finished run as `prizeflow train` records it, with the given test RMSE (``digest``:
    another model digest, as if the model had changed since; ``command``: another command's
    tag, as if it were not a train run)."""
    with mlflow.start_run(experiment_id=experiment_id or store["experiment_id"]) as run:
        _record_train_run(store, SAME_DATA, 0, test_rmse, bias_rmse, pipeline_run, digest)
        if command != train_runs.TRAIN:
            mlflow.set_tag(train_runs.COMMAND_TAG, command)
    return run.info.run_id


def aliases(store) -> dict:
    model = store["client"].get_registered_model(store["name"])
    return {alias: int(version) for alias, version in model.aliases.items()}


def versions(store) -> int:
    return len(store["client"].search_model_versions(f"name = '{store['name']}'"))


def test_an_equal_rmse_is_not_a_win_and_the_gate_reads_exact_metrics(store):
    config = store["config"]
    first = registry.register(None, config, train_run(store, 0.8099855))
    assert (first["version"], first["alias"]) == (1, "champion")
    # Bit-identical: a rounded tag ("0.809986") would have called this better.
    same = registry.register(None, config, train_run(store, 0.8099855))
    assert (same["version"], same["alias"], same["champion_rmse_before"]) == (2, "challenger",
                                                                                0.8099855)
    # Better by less than the tag's rounding: still better.
    better = registry.register(None, config, train_run(store, 0.8099855 - 1e-9))
    assert (better["version"], better["alias"]) == (3, "champion")
    assert aliases(store) == {"champion": 3}  # the new champion cleared the challenger
    assert store["client"].get_model_version(store["name"], "1").tags["test_rmse"] == repr(0.8099855)


def test_a_failed_champion_lookup_fails_register_and_promotes_nothing(store, monkeypatch):
    config = store["config"]
    registry.register(None, config, train_run(store, 0.9))
    candidate = train_run(store, 0.5)

    def unavailable(self, name):
        raise MlflowException("connection reset by peer", error_code="INTERNAL_ERROR")

    monkeypatch.setattr(MlflowClient, "get_registered_model", unavailable)
    with pytest.raises(registry.RegistryError,
                       match=f"cannot read registered model '{store['name']}': connection reset"):
        registry.register(None, config, candidate)
    monkeypatch.undo()
    assert aliases(store) == {"champion": 1}
    assert versions(store) == 1


def test_only_finished_train_runs_of_the_experiment_and_each_once(store):
    config = store["config"]
    other = mlflow.create_experiment(f"elsewhere-{store['name']}")
    with pytest.raises(registry.RegistryError, match="belongs to experiment .* not 'prizeflow'"):
        registry.register(None, config, train_run(store, 0.8, experiment_id=other))
    with pytest.raises(train_runs.TrainRunError,
                       match="is not a `prizeflow train` or `prizeflow blend` run"):
        registry.register(None, config, train_run(store, 0.8, command="ingest"))
    run_id = train_run(store, 0.8)
    first = registry.register(None, config, run_id)
    again = registry.register(None, config, run_id)
    assert again["already_registered"] and not first["already_registered"]
    assert (again["version"], again["alias"]) == (first["version"], "champion")
    assert versions(store) == 1


def test_register_does_not_create_the_experiment(store):
    missing = store["config"].override("mlflow.experiment=never-trained")
    with pytest.raises(registry.RegistryError, match="no MLflow experiment 'never-trained'"):
        registry.register(None, missing)
    assert store["client"].get_experiment_by_name("never-trained") is None


def test_a_model_worse_than_its_bias_baseline_gets_no_alias(store, caplog):
    config = store["config"]
    registry.register(None, config, train_run(store, 0.85, bias_rmse=0.9))
    worse = registry.register(None, config, train_run(store, 0.95, bias_rmse=0.9))
    assert worse["alias"] is None and worse["gate"] == "below_baseline"
    assert "not better than its own bias baseline" in caplog.text
    assert aliases(store) == {"champion": 1}


def test_a_rerun_completes_a_register_cut_short(store, monkeypatch):
    config = store["config"]
    run_id = train_run(store, 0.8)
    real = MlflowClient.set_registered_model_alias

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt  # the process dies between registering and the alias

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", crash)
    with pytest.raises(KeyboardInterrupt):
        registry.register(None, config, run_id)
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", real)
    half = store["client"].get_model_version(store["name"], "1")
    assert registry.GATE_TAG not in half.tags and aliases(store) == {}
    done = registry.register(None, config, run_id)
    assert (done["version"], done["alias"], done["already_registered"]) == (1, "champion", False)
    assert store["client"].get_model_version(store["name"], "1").tags[registry.GATE_TAG] == "champion"
    assert versions(store) == 1


def test_registers_started_together_gate_one_after_the_other(store):
    """Four registers at once on one SQLite store: each gates against the champion the one
    before it left (versions are numbered in that order), and the best model ends as champion."""
    import threading

    config = store["config"]
    rmses = [0.84, 0.80, 0.86, 0.82]
    runs = {train_run(store, rmse): rmse for rmse in rmses}
    start = threading.Barrier(len(runs))
    results, errors = [], []

    def register(run_id):
        start.wait()
        try:
            results.append(registry.register(None, config, run_id))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(run_id,)) for run_id in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == [] and len(results) == 4
    assert versions(store) == 4
    by_version = sorted(results, key=lambda r: r["version"])
    assert [r["version"] for r in by_version] == [1, 2, 3, 4]
    best_before = None
    for result in by_version:  # what a serial gate in version order decides
        rmse = runs[result["train_run_id"]]
        expected = "champion" if best_before is None or rmse < best_before else "challenger"
        assert result["gate"] == expected, by_version
        assert result["champion_rmse_before"] == best_before
        best_before = rmse if best_before is None else min(best_before, rmse)
    champion = aliases(store)["champion"]
    assert runs[by_version[champion - 1]["train_run_id"]] == min(rmses)


def test_a_champion_moved_by_another_register_stops_this_one(store, monkeypatch):
    """Where no lock is taken (a tracking server), a champion that moved between the gate's
    read and the alias write stops the register; a re-run gates against the new champion."""
    config = store["config"]
    slower, faster = train_run(store, 0.82), train_run(store, 0.80)
    client = store["client"]
    real_create = registry._create_version

    def another_register_meanwhile(client_, name, candidate):
        monkeypatch.setattr(registry, "_create_version", real_create)
        crowned = registry._gate_and_register(client, config, name, train_runs.get(client, faster), None)
        assert crowned["alias"] == "champion"
        return real_create(client_, name, candidate)

    monkeypatch.setattr(registry, "_create_version", another_register_meanwhile)
    with pytest.raises(registry.RegistryError, match=(
            f"the champion of '{store['name']}' moved from no champion to v1 while this "
            "register ran .* run `prizeflow register` again")):
        registry.register(None, config, slower)
    assert aliases(store) == {"champion": 1}
    again = registry.register(None, config, slower)
    assert (again["version"], again["alias"], again["champion_rmse_before"]) == (2, "challenger",
                                                                                 0.80)
    assert aliases(store) == {"champion": 1, "challenger": 2}


def test_the_gate_reads_the_rmse_fixed_at_the_end_of_training(store):
    """A metric can be logged again on a finished run (its latest value wins); the gate's
    RMSE is a param, which MLflow refuses to change."""
    config = store["config"]
    registry.register(None, config, train_run(store, 0.80))
    worse = train_run(store, 0.82)
    store["client"].log_metric(worse, "test_rmse", 0.10)  # anyone with write access can
    with pytest.raises(MlflowException):
        store["client"].log_param(worse, "gate.test_rmse", "0.10")
    result = registry.register(None, config, worse)
    assert (result["alias"], result["test_rmse"]) == ("challenger", 0.82)
    assert aliases(store) == {"champion": 1, "challenger": 2}
    with mlflow.start_run(experiment_id=store["experiment_id"]) as run:
        mlflow.set_tags({"prizeflow.command": "train", "prizeflow.model_uri": store["model_uri"]})
        mlflow.log_metrics({"test_rmse": 0.1})
    with pytest.raises(registry.RegistryError, match="has no gate record"):
        registry.register(None, config, run.info.run_id)


def test_two_registers_of_one_run_make_one_version(store, monkeypatch):
    """Where no lock is taken (a tracking server), two registers of one run can both create a
    version: the later one deletes its own and reports the earlier one, which the first
    register gates."""
    config = store["config"]
    run_id = train_run(store, 0.8)
    real_create = registry._create_version

    def another_register_of_the_same_run_first(client_, name, candidate):
        monkeypatch.setattr(registry, "_create_version", real_create)
        real_create(client_, name, candidate)  # the other register's version: v1
        return real_create(client_, name, candidate)  # this one's: v2

    monkeypatch.setattr(registry, "_create_version", another_register_of_the_same_run_first)
    loser = registry.register(None, config, run_id)
    assert (loser["version"], loser["already_registered"], loser["gate"]) == (1, True, "pending")
    assert [int(v.version) for v in store["client"].search_model_versions(
        f"name = '{store['name']}'")] == [1]
    winner = registry.register(None, config, run_id)  # the first register, completing its gate
    assert (winner["version"], winner["alias"]) == (1, "champion")
    assert versions(store) == 1


def test_a_pipeline_run_registers_the_run_its_own_train_made(store):
    config = store["config"]
    own = train_run(store, 0.85, pipeline_run="scheduled__2026-12-06T00:00:00+00:00")
    train_run(store, 0.80)  # newer, from another pipeline run or by hand
    result = registry.register(None, config, pipeline_run="scheduled__2026-12-06T00:00:00+00:00")
    assert result["train_run_id"] == own
    with pytest.raises(train_runs.TrainRunError, match="no finished `prizeflow train` run of "
                                                     "pipeline run 'other'"):
        registry.register(None, config, pipeline_run="other")


def test_a_masked_lake_root_must_match_lake_root_to_rescore(store, tmp_path):
    """The champion is re-scored on the candidate's own data: when the run's lake root was
    masked in its record, lake.root must be that very lake; another is refused before any
    Spark work, and nothing is registered."""
    config = store["config"]
    registry.register(None, config, train_run(store, 0.80))
    secret_lake = "s3a://AKIA:s3cr3t@bucket/lake"
    identity = gate.DataIdentity(secret_lake, "t2", f"{secret_lake}/ratings", 1, None, None, None)
    with mlflow.start_run(experiment_id=store["experiment_id"]) as run:
        _record_train_run(store, identity, 1, 0.7, 1.0, None, None)
    with pytest.raises(registry.RegistryError, match=r"was trained on the lake s3a://\*\*\*@bucket"
                                                     r"/lake, and lake.root .* is another lake"):
        registry.register(None, config, run.info.run_id)
    assert versions(store) == 1
    candidate = registry.Candidate.of(train_runs.get(store["client"], run.info.run_id))
    same = config.override(f"lake.root={secret_lake}")
    assert registry.candidate_lake_root(same, candidate) == secret_lake


def test_a_run_whose_model_changed_since_train_is_not_registered(store):
    """register reads the run's model back from the artifact store: files that no longer have
    the digest train recorded are refused in one line, and no version is created."""
    config = store["config"]
    changed = train_run(store, 0.80, digest="sha256:" + "0" * 64)
    with pytest.raises(model_integrity.ModelIntegrityError) as caught:
        registry.register(None, config, changed)
    assert f"the model of train run {changed} does not match" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert store["client"].search_model_versions(f"name = '{store['name']}'") == []
    result = registry.register(None, config, train_run(store, 0.80))
    version = store["client"].get_model_version(store["name"], str(result["version"]))
    assert version.tags[model_integrity.DIGEST_TAG] == store["digest"]


def test_the_split_signature_names_the_qualifying_pairs_the_test_set_was_scored_with():
    """Every scoring history holds the lake's qualifying pairs, so their table's version is part
    of what a recorded RMSE means; a lake without them signs as before."""
    from dataclasses import replace

    settings = {"seed": 42, "validation_fraction": 0.1}
    plain = SAME_DATA.split_signature("hash", settings)
    assert plain == gate.digest("ratings=table-1@/data/lake/ratings@0;method=hash;seed=42;"
                                "validation_fraction=0.1")
    with_pairs = replace(SAME_DATA, qualifying_table="table-9",
                         qualifying_path="/data/lake/qualifying", qualifying_version=3)
    signed = with_pairs.split_signature("hash", settings)
    assert signed != plain
    assert replace(with_pairs, qualifying_version=4).split_signature("hash", settings) != signed
    assert with_pairs.split_signature("hash", settings) == signed

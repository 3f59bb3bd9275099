"""Config validation: unknown keys and wrong types are errors naming the key."""

import pytest

from prizeflow.config import ConfigError, load_config
from prizeflow.spark import delta_package, session_settings


def test_defaults_then_file_then_overrides(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("lake:\n  root: /data/lake\ningest:\n  max_quarantine_fraction: 0.05\n")
    config = load_config(path, ["ingest.max_quarantine_fraction=0.2", "mlflow.experiment=007"])
    assert config.lake.root == "/data/lake"
    assert config.ingest.max_quarantine_fraction == 0.2
    assert config.mlflow.experiment == "007"  # strings stay strings
    assert config.spark.delta_source == "packages"


@pytest.mark.parametrize("text, key", [
    ("lake:\n  rooot: x\n", "lake.rooot"),
    ("nonsense: 1\n", "nonsense"),
    ("ingest:\n  max_quarantine_fraction: lots\n", "ingest.max_quarantine_fraction"),
    ("ingest:\n  max_quarantine_fraction: true\n", "ingest.max_quarantine_fraction"),
    ("spark:\n  delta_source: maybe\n", "spark.delta_source"),
    ("spark:\n  conf: [1, 2]\n", "spark.conf"),
    ("lake: 3\n", "lake"),
])
def test_bad_files_name_the_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(path)


@pytest.mark.parametrize("assignment, message", [
    ("lake.nope=1", "'lake.nope'"),
    ("ingest.max_quarantine_fraction=abc", "'ingest.max_quarantine_fraction'"),
    ("lake=1", "'lake' is a section"),
    ("no_equals_sign", "dotted.name=value"),
    ("train.neighbours.k=0", r"'train.neighbours.k' must be >= 1"),
    ("train.implicit.ridge=0", r"'train.implicit.ridge' must be > 0"),
    ("train.neighbours.damping=-1", r"'train.neighbours.damping' must be >= 0"),
    ("train.neighbours.kk=3", "'train.neighbours.kk'"),
])
def test_bad_overrides_name_the_key(assignment, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [assignment])


@pytest.mark.parametrize("assignment, meant", [
    ("train.rank=8", "train.grid.rank"),          # a right name in the wrong section
    ("train.grid.rnk=[8]", "train.grid.rank"),    # a typo
    ("train.neighbors.k=3", "train.neighbours.k"),
    ("trian.seed=1", "train.seed"),
    ("mlflow.tracking=x", "mlflow.tracking_uri"),
])
def test_unknown_keys_suggest_the_nearest_valid_one(assignment, meant):
    with pytest.raises(ConfigError, match=rf"did you mean '{meant}'\?"):
        load_config(None, [assignment])


def test_a_file_key_in_the_wrong_section_gets_a_suggestion(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("train:\n  rank: [8]\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.rank' \(did you mean "
                                          r"'train.grid.rank'\?\)"):
        load_config(path)


def test_nothing_like_any_key_gets_no_guess():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["zzzz=1"])
    assert str(caught.value) == "unknown config key 'zzzz' (from --set zzzz)"


def test_free_spark_conf_keys_keep_their_dots():
    config = load_config(None, ["spark.conf.spark.sql.shuffle.partitions=3"])
    assert config.spark.conf == {"spark.sql.shuffle.partitions": 3}


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_delta_settings_per_source(tmp_path):
    config = load_config(None)
    settings = session_settings(config, "4.2.0")
    assert settings["spark.jars.packages"] == "io.delta:delta-spark_4.2_2.13:4.4.0"
    assert delta_package("4.2.0") == settings["spark.jars.packages"]
    s3a = load_config(None, ['spark.packages=["org.apache.hadoop:hadoop-aws:3.5.0"]'])
    assert session_settings(s3a, "4.2.0")["spark.jars.packages"] == \
        "io.delta:delta-spark_4.2_2.13:4.4.0,org.apache.hadoop:hadoop-aws:3.5.0"
    builtin = load_config(None, ["spark.delta_source=builtin"])
    assert "spark.sql.extensions" not in session_settings(builtin, "4.2.0")
    jar = tmp_path / "delta.jar"
    jar.write_bytes(b"")
    jars = load_config(None, ["spark.delta_source=jars", f"spark.delta_jars=[{jar}]"])
    assert session_settings(jars, "4.2.0")["spark.jars"] == str(jar)
    jars_and_s3a = load_config(None, ["spark.delta_source=jars", f"spark.delta_jars=[{jar}]",
                                      'spark.packages=["org.apache.hadoop:hadoop-aws:3.5.0"]'])
    settings = session_settings(jars_and_s3a, "4.2.0")
    assert settings["spark.jars"] == str(jar)
    assert settings["spark.jars.packages"] == "org.apache.hadoop:hadoop-aws:3.5.0"
    missing = load_config(None, ["spark.delta_source=jars", "spark.delta_jars=[/nope.jar]"])
    with pytest.raises(FileNotFoundError, match="/nope.jar"):
        session_settings(missing, "4.2.0")


def test_resolved_jars_are_remembered_per_package_set(tmp_path, monkeypatch):
    from prizeflow.spark import cached_jars, jar_cache_file, remember_jars

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    jars = [tmp_path / "io.delta_delta-spark.jar", tmp_path / "io.delta_delta-storage.jar"]
    for jar in jars:
        jar.write_bytes(b"PK")
    own = tmp_path / "mine.jar"
    settings = {"spark.jars.packages": "io.delta:delta-spark_4.2_2.13:4.4.0",
                "spark.jars": str(own)}
    assert cached_jars(settings) is None  # never resolved here: Ivy resolves
    remember_jars(settings, ",".join([str(own), *(f"file://{j}" for j in jars)]))
    assert jar_cache_file(settings).parent == tmp_path / "cache" / "prizeflow"
    assert cached_jars(settings) == [f"file://{j}" for j in jars]  # the config's own jar is not
    other = {**settings, "spark.jars.repositories": "https://repo.example/maven"}
    assert jar_cache_file(other) != jar_cache_file(settings) and cached_jars(other) is None
    jars[1].unlink()
    assert cached_jars(settings) is None  # a jar is gone: resolve again


def test_over_spark_connect_the_lake_is_on_the_servers_filesystem(tmp_path, monkeypatch):
    from prizeflow import lake

    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    local = load_config(None, [f"lake.root={tmp_path}", "spark.master=local[2]"])
    assert lake.local_root(local) == tmp_path
    remote = load_config(None, [f"lake.root={tmp_path}", "spark.remote=sc://127.0.0.1:15002"])
    assert lake.local_root(remote) is None
    monkeypatch.setenv("SPARK_REMOTE", "sc://127.0.0.1:15002")
    assert lake.local_root(local) is None


def test_errors_say_where_the_value_came_from(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("lake:\n  root: /data/lake\ntrain:\n  grid:\n    rank: [8, 0]\n")
    with pytest.raises(ConfigError, match=rf"^config key 'train.grid.rank' items must be >= 1, "
                                          rf"got 0 \(config file {path} line 5\)$"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^config key 'ingest.max_quarantine_fraction' must be "
                                          r"a number, got str 'x' \(from --set "
                                          r"ingest.max_quarantine_fraction\)$"):
        load_config(path, ["train.grid.rank=8", "ingest.max_quarantine_fraction=x"])
    with pytest.raises(ConfigError, match=r"^unknown config key 'lake.depth' \(from --set "
                                          r"lake.depth\)$"):
        load_config(path, ["lake.depth=3"])


def test_a_key_set_twice_in_one_file_is_an_error(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("lake:\n  root: /a\ntrain:\n  seed: 1\nlake:\n  root: /b\n")
    with pytest.raises(ConfigError, match=rf"^config file {path}, line 5: key 'lake' is set "
                                          r"twice \(first on line 1\)$"):
        load_config(path)
    path.write_text("spark:\n  conf:\n    spark.x: 1\n    spark.x: 2\n")
    with pytest.raises(ConfigError, match=r"line 4: key 'spark.conf.spark.x' is set twice"):
        load_config(path)


def test_set_errors_are_one_line_without_the_value_and_secrets_stay_text():
    secret = "@Secr3t[\n  more"
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"spark.conf.spark.x={secret}"])
    assert str(caught.value).startswith("--set spark.conf.spark.x: the value is not a YAML scalar")
    assert "\n" not in str(caught.value) and "Secr3t" not in str(caught.value)
    config = load_config(None, ["spark.conf.spark.hadoop.fs.s3a.secret.key=0777",
                                "spark.conf.spark.hadoop.fs.azure.account.key.acct=123"])
    assert config.spark.conf["spark.hadoop.fs.s3a.secret.key"] == "0777"
    assert config.spark.conf["spark.hadoop.fs.azure.account.key.acct"] == "123"
    assert load_config(None, ["spark.conf.spark.sql.shuffle.partitions=8"]).spark.conf[
        "spark.sql.shuffle.partitions"] == 8


def test_date_limits_are_dates():
    from datetime import date

    config = load_config(None, ["ingest.earliest_date=1995-01-01", "ingest.latest_date=2006-01-01"])
    assert (config.ingest.earliest_date, config.ingest.latest_date) == (date(1995, 1, 1),
                                                                       date(2006, 1, 1))
    with pytest.raises(ConfigError, match=r"'ingest.earliest_date' must be a date \(YYYY-MM-DD\)"):
        load_config(None, ["ingest.earliest_date=soon"])

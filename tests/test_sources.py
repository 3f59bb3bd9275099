"""Finding corpus files and telling their format."""

import pytest
from conftest import write

from prizeflow.sources import SourceError, discover, listed_by_spark


def test_netflix_layout_and_ignored_files(tmp_path):
    write(tmp_path / "training_set" / "mv_0000001.txt", "1:\n")
    write(tmp_path / "movie_titles.txt", "1,2000,A\n")
    write(tmp_path / "probe.txt", "1:\n")
    write(tmp_path / "README", "hi\n")
    write(tmp_path / "SHA256SUMS", "x\n")
    plan = discover(str(tmp_path))
    assert plan.format == "netflix"
    assert sorted(f.table for f in plan.files) == ["movies", "probe", "ratings"]
    assert [p.rsplit("/", 1)[1] for p in plan.ignored] == ["README", "SHA256SUMS"]
    assert all(f.path.startswith("file:/") for f in plan.files)


@pytest.mark.parametrize("name, fmt", [("u.data", "ml-100k"), ("ratings.dat", "ml-dat"),
                                       ("ratings.csv", "ml-csv")])
def test_movielens_variants(tmp_path, name, fmt):
    write(tmp_path / name, "x\n")
    assert discover(str(tmp_path)).format == fmt
    assert discover(str(tmp_path), "movielens").format == fmt
    with pytest.raises(SourceError, match="no netflix ratings"):
        discover(str(tmp_path), "netflix")


def test_errors(tmp_path):
    with pytest.raises(SourceError, match="source not found"):
        discover(str(tmp_path / "missing"))
    write(tmp_path / "a" / "README", "x\n")
    with pytest.raises(SourceError, match="no recognisable"):
        discover(str(tmp_path / "a"))
    write(tmp_path / "b" / "u.data", "x\n")
    write(tmp_path / "b" / "combined_data_1.txt", "x\n")
    with pytest.raises(SourceError, match="several formats"):
        discover(str(tmp_path / "b"))


@pytest.mark.spark
def test_listing_through_spark_gives_what_the_local_walk_gives(spark, tmp_path):
    """The Hadoop lister (object stores, cluster filesystems, Spark Connect) on a local folder:
    the same files, sizes and times as the local walk, with a space in a name unescaped."""
    write(tmp_path / "with space" / "mv_0000001.txt", "1:\n1,3,2005-01-01\n")
    write(tmp_path / "movie_titles.txt", "1,2000,A\n")
    write(tmp_path / "README", "hi\n")
    local = discover(str(tmp_path))
    listed = discover(f"file:{tmp_path}", spark=spark)
    assert listed.format == local.format == "netflix"
    assert [(f.path, f.table, f.size) for f in listed.files] == \
        [(f.path, f.table, f.size) for f in local.files]
    assert "file:" + str(tmp_path / "with space" / "mv_0000001.txt") in [f.path for f in listed.files]
    for by_spark, by_walk in zip(listed.files, local.files):
        assert by_spark.modified == pytest.approx(by_walk.modified, abs=1e-3)
    assert [p.rsplit("/", 1)[1] for p in listed.ignored] == ["README"]
    with pytest.raises(SourceError, match=f"^source not found: file:{tmp_path}/missing$"):
        discover(f"file:{tmp_path}/missing", spark=spark)


@pytest.mark.parametrize("source, connect, by_spark", [
    ("/data/netflix", False, False), ("file:/data/netflix", False, False),
    ("s3a://bucket/netflix", False, True), ("abfss://c@acct.dfs.core.windows.net/n", False, True),
    ("dbfs:/netflix", False, True), ("/data/netflix", True, True)])
def test_which_sources_spark_lists(source, connect, by_spark):
    assert listed_by_spark(source, connect) is by_spark


CREDENTIALS = "[default]\naws_access_key_id = AKIAPLANTEDEXAMPLE00\naws_secret_access_key = planted/Secret\n"


def _corpus_with_links(tmp_path):
    """A Netflix corpus whose combined_data_5.txt is a symlink to a credentials file outside it,
    and whose training_set is a symlink to a folder outside it."""
    secret = tmp_path / "home" / ".aws" / "credentials"
    write(secret, CREDENTIALS)
    write(tmp_path / "elsewhere" / "mv_0000002.txt", "2:\n1,3,2005-01-01\n")
    corpus = tmp_path / "corpus"
    write(corpus / "combined_data_1.txt", "1:\n1,3,2005-01-01\n")
    # A link that stays inside the corpus is a file of it, read as one.
    write(corpus / "parts" / "real.txt", "1:\n2,4,2005-01-02\n")
    (corpus / "combined_data_2.txt").symlink_to(corpus / "parts" / "real.txt")
    return corpus, secret


def test_a_symlink_out_of_the_source_is_refused_unless_allowed(tmp_path):
    corpus, secret = _corpus_with_links(tmp_path)
    assert sorted(f.name for f in discover(str(corpus)).files) == [
        "combined_data_1.txt", "combined_data_2.txt"]
    (corpus / "combined_data_5.txt").symlink_to(secret)
    with pytest.raises(SourceError) as caught:
        discover(str(corpus))
    message = str(caught.value)
    assert "\n" not in message and "combined_data_5.txt leads out of the source folder" in message
    assert "ingest.follow_external_links" in message and "planted" not in message
    allowed = discover(str(corpus), follow_external_links=True)
    assert "combined_data_5.txt" in [f.name for f in allowed.files]
    # A folder link out of the source is refused the same way.
    (corpus / "combined_data_5.txt").unlink()
    (corpus / "training_set").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SourceError, match="symlink .*training_set leads out of the source"):
        discover(str(corpus))
    assert "training_set/mv_0000002.txt" in [
        f.name for f in discover(str(corpus), follow_external_links=True).files]


def test_the_ingest_command_refuses_a_planted_link_before_reading_anything(tmp_path):
    """The whole process: `prizeflow ingest` exits 1 with one line naming the link, before Spark
    starts; no lake is written and no line of the credentials reaches any output."""
    import subprocess

    from processes import BIN, pipeline_env

    corpus, secret = _corpus_with_links(tmp_path)
    (corpus / "combined_data_5.txt").symlink_to(secret)
    lake = tmp_path / "lake"
    result = subprocess.run([str(BIN / "prizeflow"), "ingest", "--source", str(corpus),
                             "--set", f"lake.root={lake}"], cwd=tmp_path, env=pipeline_env(),
                            capture_output=True, text=True, timeout=300)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and "SparkSession up" not in result.stderr
    assert last.startswith("prizeflow ingest: error: symlink ") and "combined_data_5.txt" in last
    assert not lake.exists()
    output = result.stdout + result.stderr
    assert "AKIAPLANTEDEXAMPLE00" not in output and "planted/Secret" not in output

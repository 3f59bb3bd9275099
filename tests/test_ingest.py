"""Ingest on real Spark and Delta: every bad-line kind, split files, line endings, idempotent and
incremental runs, MovieLens formats, and the fail-fast paths leaving tables untouched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import make_config, table, write

from prizeflow import lake
from prizeflow.generate import generate_corpus, make_spec
from prizeflow.jobs.common import JobError

pytestmark = pytest.mark.spark


def _versions(spark, config):
    root = config.lake.root
    return {t: lake.version(spark, lake.table_path(root, t))
            for t in lake.DATA_TABLES + ("quarantine", "ingest_files")}


def _quarantine(spark, config):
    return sorted((os.path.basename(r.source_file), r.line_no, r.reason, r.target)
                  for r in table(spark, config, "quarantine").collect())


def _ratings(spark, config):
    return sorted((r.movie_id, r.user_id, r.rating, str(r.rated_on))
                  for r in table(spark, config, "ratings").collect())


def _assert_every_line_accounted(spark, config, source: Path):
    """Per file: lines read = headers + rows + quarantined + skipped, and = lines on disk."""
    for row in table(spark, config, "ingest_files").collect():
        assert row.lines_read == row.header_lines + row.rows + row.quarantined + row.skipped
        path = Path(row.location.removeprefix("file:"))
        on_disk = len(path.read_bytes().splitlines())
        assert row.lines_read == on_disk, row.source_file


BAD_MOVIE_1 = (
    "1:\n"
    "10,3,2005-01-01\n"       # 2 ok
    "11,6,2005-01-01\n"       # 3 bad_rating
    "12,3,2005-13-01\n"       # 4 bad_date
    "13,3\n"                  # 5 missing_fields
    "14,3,2005-01-01,x\n"     # 6 extra_fields
    "abc,3,2005-01-01\n"      # 7 bad_user_id
    "-5,3,2005-01-01\n"       # 8 bad_user_id
    "10,4,2005-02-02\n"       # 9 duplicate of line 2
    "\n"                      # 10 blank_line (not trailing)
    "15,2,2005-01-03\n"       # 11 ok
    "19,3.5,2005-01-03\n"     # 12 bad_rating (Netflix stars are whole)
    "20,4,05-01-03\n"         # 13 bad_date
    "x:\n"                    # 14 bad_header
    "16,2,2005-01-03\n"       # 15 no_header (its header is bad)
)
BAD_MOVIE_2 = (
    "17,3,2005-01-01\n"       # 1 no_header: before any header
    "2:\n"                    # 2 header
    "18,5,2005-01-01\n"       # 3 ok
    "\n\n"                    # 4, 5 trailing blanks: skipped
)


def test_every_bad_line_kind_is_quarantined_with_its_reason(spark, tmp_path, ingest):
    source = tmp_path / "corpus"
    write(source / "training_set" / "mv_0000001.txt", BAD_MOVIE_1)
    write(source / "training_set" / "mv_0000002.txt", BAD_MOVIE_2)
    write(source / "movie_titles.txt", "1,2001,Fine\nzz,2001,Bad id\n2,20x1,Bad year\n3,NULL,\n")
    write(source / "README", "not data\n")
    config = make_config(tmp_path, ingest={"max_quarantine_fraction": 1.0})

    summary = ingest(config, source)

    assert _ratings(spark, config) == [(1, 10, 3.0, "2005-01-01"), (1, 15, 2.0, "2005-01-03"),
                                       (2, 18, 5.0, "2005-01-01")]
    assert _quarantine(spark, config) == sorted([
        ("mv_0000001.txt", 3, "bad_rating", "ratings"),
        ("mv_0000001.txt", 4, "bad_date", "ratings"),
        ("mv_0000001.txt", 5, "missing_fields", "ratings"),
        ("mv_0000001.txt", 6, "extra_fields", "ratings"),
        ("mv_0000001.txt", 7, "bad_user_id", "ratings"),
        ("mv_0000001.txt", 8, "bad_user_id", "ratings"),
        ("mv_0000001.txt", 9, "duplicate", "ratings"),
        ("mv_0000001.txt", 10, "blank_line", "ratings"),
        ("mv_0000001.txt", 12, "bad_rating", "ratings"),
        ("mv_0000001.txt", 13, "bad_date", "ratings"),
        ("mv_0000001.txt", 14, "bad_header", "ratings"),
        ("mv_0000001.txt", 15, "no_header", "ratings"),
        ("mv_0000002.txt", 1, "no_header", "ratings"),
        ("movie_titles.txt", 2, "bad_movie_id", "movies"),
        ("movie_titles.txt", 3, "bad_year", "movies"),
        ("movie_titles.txt", 4, "missing_title", "movies"),
    ])
    raw = {r.line_no: r.line for r in table(spark, config, "quarantine").collect()
           if r.source_file.endswith("mv_0000001.txt")}
    assert raw[9] == "10,4,2005-02-02" and raw[14] == "x:"
    assert summary["lines_read"] == 15 + 5 + 4
    assert summary["quarantined"] == 16
    assert summary["blank_lines_skipped"] == 2
    assert summary["quarantine_reasons"]["bad_user_id"] == 2
    assert summary["files_ignored"] == 1
    assert summary["ratings"] == 3 and summary["movies"] == 1
    _assert_every_line_accounted(spark, config, source)


def _python_parse(corpus: Path) -> list[tuple]:
    """An independent reading of the corpus, line by line, for comparison."""
    out = []
    files = sorted((corpus / "training_set").glob("mv_*.txt")) or sorted(corpus.glob("combined_data_*.txt"))
    for path in files:
        movie = None
        for line in path.read_text().splitlines():
            if line.endswith(":"):
                movie = int(line[:-1])
            else:
                user, stars, day = line.split(",")
                out.append((movie, int(user), float(stars), day))
    return sorted(out)


def test_split_combined_data_keeps_every_row_on_its_movie(spark, tmp_path, ingest):
    corpus = tmp_path / "combined"
    generate_corpus(make_spec(corpus, 30_000, movies=120, seed=3, layout="combined_data"))
    config = make_config(tmp_path)
    spark.conf.set("spark.sql.files.maxPartitionBytes", "8192")
    spark.conf.set("spark.sql.files.openCostInBytes", "0")
    try:
        n_splits = spark.read.text(str(corpus / "combined_data_1.txt")).rdd.getNumPartitions()
        summary = ingest(config, corpus)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
        spark.conf.unset("spark.sql.files.openCostInBytes")
    assert n_splits > 10
    assert summary["quarantined"] == 0
    assert _ratings(spark, config) == _python_parse(corpus)
    # Line numbers point at the very line on disk.
    sample = table(spark, config, "ratings").orderBy("source_file", "line_no").limit(2000).collect()
    cache: dict[str, list[str]] = {}
    for row in sample:
        # A row's file is its name under the source folder.
        lines = cache.setdefault(row.source_file, (corpus / row.source_file)
                                 .read_text().splitlines())
        assert lines[row.line_no - 1] == f"{row.user_id},{int(row.rating)},{row.rated_on}"
    _assert_every_line_accounted(spark, config, corpus)


def test_crlf_endings_and_missing_final_newline(spark, tmp_path, ingest, monkeypatch):
    source = tmp_path / "crlf"
    write(source / "training_set" / "mv_0000007.txt",
          "7:\r\n100,4,2004-02-29\r\n101,1,1999-12-31\r\n102,5,2005-12-31")
    write(source / "probe.txt", "7:\r\n101")
    # A relative lake.root and source, as in conf/local.yaml, resolve against the working dir.
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, lake={"root": "lake"})
    source = Path("crlf")
    summary = ingest(config, source)
    assert _ratings(spark, config) == [(7, 100, 4.0, "2004-02-29"), (7, 101, 1.0, "1999-12-31"),
                                       (7, 102, 5.0, "2005-12-31")]
    assert [(r.movie_id, r.user_id) for r in table(spark, config, "probe").collect()] == [(7, 101)]
    assert summary["lines_read"] == 6 and summary["quarantined"] == 0
    last = table(spark, config, "ratings").where("user_id = 102").first()
    assert last.line_no == 4


def test_rerun_is_idempotent_and_new_files_are_added(spark, tmp_path, ingest):
    source = tmp_path / "inc"
    for movie in (1, 2, 3):
        write(source / "training_set" / f"mv_{movie:07d}.txt",
              f"{movie}:\n" + "".join(f"{u},{(u + movie) % 5 + 1},2005-01-0{u % 9 + 1}\n"
                                      for u in range(1, 41)))
    config = make_config(tmp_path, ingest={"max_quarantine_fraction": 0.5})
    first = ingest(config, source)
    before = _ratings(spark, config)
    versions = _versions(spark, config)
    assert first["ratings"] == 120 and first["files_ingested"] == 3

    again = ingest(config, source)
    assert again["files_ingested"] == 0 and again["files_unchanged"] == 3
    assert _ratings(spark, config) == before
    assert _versions(spark, config) == versions  # nothing was committed

    write(source / "training_set" / "mv_0000004.txt", "4:\n7,5,2005-03-03\n8,4,2005-03-04\n")
    # A new file repeating a pair already in the table: the table's row stays.
    write(source / "training_set" / "mv_0000005.txt", "1:\n1,1,2005-04-04\n")
    added = ingest(config, source)
    assert added["files_ingested"] == 2 and added["ratings"] == 122
    assert added["quarantine_reasons"] == {"duplicate": 1}
    assert _ratings(spark, config) == sorted(before + [(4, 7, 5.0, "2005-03-03"),
                                                       (4, 8, 4.0, "2005-03-04")])

    # A changed file replaces its own earlier rows; no duplicates against itself.
    path = source / "training_set" / "mv_0000004.txt"
    path.write_text(path.read_text() + "9,3,2005-03-05\n")
    changed = ingest(config, source)
    assert changed["files_ingested"] == 1 and changed["ratings"] == 123
    assert changed["quarantined"] == 0
    assert table(spark, config, "ratings").where("movie_id = 4").count() == 3
    _assert_every_line_accounted(spark, config, source)


def test_movielens_100k_format(spark, tmp_path, ingest):
    source = tmp_path / "ml-100k"
    write(source / "u.data", "1\t10\t4\t881250949\n2\t10\t3\t891717742\n3\t11\t3.5\t891717742\n")
    genres = ["0"] * 19
    genres[1] = genres[5] = "1"
    write(source / "u.item", ("10|Café Society (1995)|01-Jan-1995||http://x|" + "|".join(genres)
                              + "\n").encode("iso-8859-1"))
    write(source / "u.user", "1|24|M|technician|85711\n")
    config = make_config(tmp_path, ingest={"max_quarantine_fraction": 0.5})
    summary = ingest(config, source)
    assert summary["format"] == "ml-100k" and summary["files_ignored"] == 1
    assert _ratings(spark, config) == [(10, 1, 4.0, "1997-12-04"), (10, 2, 3.0, "1998-04-04")]
    assert _quarantine(spark, config) == [("u.data", 3, "bad_rating", "ratings")]
    movie = table(spark, config, "movies").first()
    assert (movie.movie_id, movie.title, movie.year, movie.genres) == (
        10, "Café Society (1995)", 1995, "Action|Comedy")


def test_movielens_dat_format_keeps_half_stars(spark, tmp_path, ingest):
    source = tmp_path / "ml-10m"
    write(source / "ratings.dat", "1::122::3.5::838985046\n1::185::5::838983525\n"
                                  "2::122::0.5::868245777\n2::185::5.5::868245777\n")
    write(source / "movies.dat", "122::Boomerang (1992)::Comedy|Romance\n"
                                 "185::Net, The (1995)::Action|Crime|Thriller\n")
    config = make_config(tmp_path, ingest={"max_quarantine_fraction": 0.5})
    ingest(config, source)
    assert [(m, u, r) for m, u, r, _ in _ratings(spark, config)] == [
        (122, 1, 3.5), (122, 2, 0.5), (185, 1, 5.0)]
    assert _quarantine(spark, config) == [("ratings.dat", 4, "bad_rating", "ratings")]
    titles = {r.movie_id: (r.title, r.year) for r in table(spark, config, "movies").collect()}
    assert titles == {122: ("Boomerang (1992)", 1992), 185: ("Net, The (1995)", 1995)}


def test_movielens_csv_format_with_header_crlf_and_quotes(spark, tmp_path, ingest):
    source = tmp_path / "ml-latest"
    write(source / "ratings.csv", "userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n"
                                  "1,3,4.5,964981247\r\n2,3,0.5,1445714835\r\n2,1,0.0,1445714835\r\n")
    write(source / "movies.csv", 'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
                                 '3,"American President, The (1995)",Comedy|Drama\n'
                                 '4,"Say ""Hi"" (2001)",Comedy\n')
    write(source / "tags.csv", "userId,movieId,tag,timestamp\n")
    config = make_config(tmp_path, ingest={"max_quarantine_fraction": 0.5})
    summary = ingest(config, source)
    assert summary["format"] == "ml-csv" and summary["header_lines"] == 2
    assert [(m, u, r) for m, u, r, _ in _ratings(spark, config)] == [
        (1, 1, 4.0), (3, 1, 4.5), (3, 2, 0.5)]
    assert _quarantine(spark, config) == [("ratings.csv", 5, "bad_rating", "ratings")]
    titles = {r.movie_id: r.title for r in table(spark, config, "movies").collect()}
    assert titles == {1: "Toy Story (1995)", 3: "American President, The (1995)",
                      4: 'Say "Hi" (2001)'}
    _assert_every_line_accounted(spark, config, source)


def test_too_many_bad_lines_fail_and_leave_tables_unchanged(spark, tmp_path, ingest):
    source = tmp_path / "thr"
    write(source / "training_set" / "mv_0000001.txt",
          "1:\n" + "".join(f"{u},4,2005-01-01\n" for u in range(1, 201)))
    config = make_config(tmp_path)
    ingest(config, source)
    versions, rows = _versions(spark, config), _ratings(spark, config)

    write(source / "training_set" / "mv_0000002.txt", "2:\n1,4,2005-01-01\n2,9,2005-01-01\n")
    write(source / "training_set" / "mv_0000003.txt", "3:\n1,4,not-a-date\n5,4,2005-01-01\n")
    with pytest.raises(JobError, match="max_quarantine_fraction"):
        ingest(config, source)
    assert _versions(spark, config) == versions
    assert _ratings(spark, config) == rows


def test_undecodable_text_fails_before_any_write(spark, tmp_path, ingest):
    source = tmp_path / "bin"
    write(source / "training_set" / "mv_0000001.txt", b"1:\n1,4,2005-01-01\n\xff\xfe\x00,4\n")
    config = make_config(tmp_path, ingest={"max_quarantine_fraction": 1.0})
    with pytest.raises(JobError, match=r"undecodable.*mv_0000001.txt, line 3"):
        ingest(config, source)
    assert not any(_versions(spark, config).values())


def test_undecodable_title_fails_even_when_the_row_parses(spark, tmp_path, ingest):
    source = tmp_path / "titles"
    write(source / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    write(source / "movies.csv", b"movieId,title,genres\n1,Bad \xff title (1995),Comedy\n")
    config = make_config(tmp_path, ingest={"max_quarantine_fraction": 1.0})
    with pytest.raises(JobError, match=r"undecodable.*movies.csv, line 2"):
        ingest(config, source)
    assert not any(_versions(spark, config).values())


def test_missing_or_unrecognisable_source(spark, tmp_path, ingest):
    config = make_config(tmp_path)
    with pytest.raises(JobError, match="source not found"):
        ingest(config, tmp_path / "nowhere")
    write(tmp_path / "junk" / "notes.txt", "hello\n")
    with pytest.raises(JobError, match="no recognisable ratings files"):
        ingest(config, tmp_path / "junk")


def test_lake_refuses_a_second_format_and_enforces_constraints(spark, tmp_path, ingest):
    netflix = tmp_path / "nf"
    write(netflix / "training_set" / "mv_0000001.txt", "1:\n5,4,2005-01-01\n")
    config = make_config(tmp_path)
    ingest(config, netflix)
    movielens = tmp_path / "ml"
    write(movielens / "u.data", "1\t10\t4\t881250949\n")
    with pytest.raises(JobError, match="holds netflix ratings"):
        ingest(config, movielens)

    from pyspark.sql import Row
    ratings_path = lake.table_path(config.lake.root, "ratings")
    schema = table(spark, config, "ratings").schema
    assert dict((f.name, f.dataType.simpleString()) for f in schema)["rating"] == "float"
    good = table(spark, config, "ratings").first().asDict()
    bad = spark.createDataFrame([Row(**{**good, "rating": 7.0})], schema)
    with pytest.raises(Exception, match="rating_in_scale"):
        bad.write.format("delta").mode("append").save(ratings_path)


@pytest.mark.shared_data
def test_real_netflix_sample(spark, tmp_path, ingest, shared_data):
    config = make_config(tmp_path)
    summary = ingest(config, shared_data / "netflix-sample")
    assert (summary["ratings"], summary["movies"], summary["probe"]) == (20_352, 17_770, 25)
    assert summary["quarantined"] == 0 and summary["qualifying"] == 0
    titles = {r.movie_id: (r.year, r.title) for r in
              table(spark, config, "movies").where("movie_id = 1").collect()}
    assert titles[1] == (2003, "Dinosaur Planet")
    null_years = table(spark, config, "movies").where("year IS NULL").count()
    assert null_years == 7
    commas = table(spark, config, "movies").where("title LIKE '%,%'").count()
    assert commas == 336
    # Every probe pair is in the training data, as in the real corpus.
    probe = table(spark, config, "probe")
    assert probe.join(table(spark, config, "ratings"), ["movie_id", "user_id"]).count() == 25
    _assert_every_line_accounted(spark, config, shared_data / "netflix-sample")


@pytest.mark.shared_data
def test_real_movielens_100k(spark, tmp_path, ingest, shared_data):
    config = make_config(tmp_path)
    summary = ingest(config, shared_data / "ml-100k")
    ratings = table(spark, config, "ratings")
    assert summary["ratings"] == 100_000 and summary["quarantined"] == 0
    assert ratings.select("user_id").distinct().count() == 943
    assert summary["movies"] == 1_682
    assert ratings.select("movie_id").distinct().count() == 1_682


def test_two_ingests_at_once_leave_no_duplicate_keys(spark, tmp_path):
    """Two ingests of overlapping sources into one lake, started together in two threads of
    one session. Source `a` holds movies 1-3; source `b` holds movies 3-4 (movie 3 in a file of
    another name), so movie 3's 40 ratings reach the lake twice."""
    import threading

    from prizeflow import ingestion

    def movie(folder, m, file_number=None):
        write(folder / "training_set" / f"mv_{file_number or m:07d}.txt",
              f"{m}:\n" + "".join(f"{u},{u % 5 + 1},2005-01-0{u % 9 + 1}\n" for u in range(1, 41)))

    for m in (1, 2, 3):
        movie(tmp_path / "a", m)
    movie(tmp_path / "b", 3, file_number=9)
    movie(tmp_path / "b", 4)
    config = make_config(tmp_path, ingest={"max_quarantine_fraction": 0.5})
    summaries, errors = {}, []
    start = threading.Barrier(2)

    def run(name):
        try:
            start.wait()
            summaries[name] = ingestion.ingest(spark, config, str(tmp_path / name), "netflix")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    ratings = table(spark, config, "ratings")
    assert ratings.count() == 4 * 40
    assert ratings.groupBy("movie_id", "user_id").count().where("count > 1").count() == 0
    quarantine = _quarantine(spark, config)
    assert len(quarantine) == 40 and {q[2] for q in quarantine} == {"duplicate"}
    assert {q[0] for q in quarantine} <= {"mv_0000003.txt", "mv_0000009.txt"}
    assert summaries["a"]["quarantined"] + summaries["b"]["quarantined"] == 40


def test_runs_racing_for_the_delta_lock_get_one_winner_and_no_error(spark, tmp_path):
    """Threads taking the lock row at the same instant: Delta's conflict detection lets one
    UPDATE win; the others see a conflict (a Delta exception type on classic Spark) or the
    winner, and report the winner as the holder instead of failing."""
    import threading

    from prizeflow import lock

    path = lake.table_path(str(tmp_path / "lake"), lock.LOCK_TABLE)
    lock._ensure(spark, path)
    barrier = threading.Barrier(4)
    outcomes: dict[str, object] = {}

    def contender(name: str) -> None:
        barrier.wait(60)
        try:
            outcomes[name] = lock._try_take(spark, path, name)
        except Exception as exc:  # noqa: BLE001 - the failure this test looks for
            outcomes[name] = exc

    threads = [threading.Thread(target=contender, args=(f"run-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    winners = [name for name, outcome in outcomes.items() if outcome is None]
    assert len(winners) == 1, outcomes
    assert all(outcome == winners[0] for name, outcome in outcomes.items()
               if name != winners[0]), outcomes
    assert lock._holder(spark, path) == winners[0]


def test_the_delta_lock_for_remote_lakes_admits_one_holder(spark, tmp_path):
    """The lock a lake on object storage uses (a conditional Delta update), on a local path."""
    import threading

    from prizeflow import lock

    root = str(tmp_path / "lake")
    held, release = threading.Event(), threading.Event()

    def holder():
        with lock.delta_lock(spark, root, 0):
            held.set()
            release.wait(120)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(120)
    with pytest.raises(JobError, match=r"lake .* is being ingested by another run \(ingest=\w+ "
                                       r"host=\S+ pid=\d+\); waited 0 s .*lease"):
        with lock.delta_lock(spark, root, 0):
            pass
    release.set()
    thread.join(120)
    with lock.delta_lock(spark, root, 0) as held:
        assert lock._holder(spark, lake.table_path(root, lock.LOCK_TABLE)) == held.name
    assert lock._holder(spark, lake.table_path(root, lock.LOCK_TABLE)) is None


def test_a_live_lease_is_never_taken_and_a_dead_one_runs_out(spark, tmp_path):
    """The Delta lock's lease: a holder that keeps renewing keeps the lock however long others
    wait (three leases here); a holder that stopped renewing (a dead driver on another host, or
    one with the same host name in another PID namespace) loses it one lease later, and then
    finds out before it would commit again."""
    import threading

    from prizeflow import lock

    root = str(tmp_path / "lake")
    path = lake.table_path(root, lock.LOCK_TABLE)
    lease = 5.0
    held_event, release = threading.Event(), threading.Event()

    def live_holder():
        with lock.delta_lock(spark, root, 0, lease_seconds=lease):
            held_event.set()
            release.wait(120)

    thread = threading.Thread(target=live_holder)
    thread.start()
    assert held_event.wait(120)
    with pytest.raises(JobError, match="being ingested by another run"):
        with lock.delta_lock(spark, root, 3 * lease, lease_seconds=lease):
            pass
    release.set()
    thread.join(120)

    # A holder that stopped renewing: its row stays, its lease runs out.
    lock._ensure(spark, path)
    # Its own deadline starts before the row's lease does, as a holder's renewal does: the row
    # cannot run out (and be taken) before the holder's own clock says it lost it.
    dead = lock.Held("ingest=dead host=elsewhere pid=1", root)
    dead.extend(lease)
    lake.update(spark, path, {"holder": "'ingest=dead host=elsewhere pid=1'",
                              "since": "current_timestamp()",
                              "lease_until": lock._lease(lease)}, "true")
    with lock.delta_lock(spark, root, 6 * lease, lease_seconds=lease) as taker:
        assert lock._holder(spark, path) == taker.name
        with pytest.raises(JobError, match="lost the ingest lock .* lease ran out"):
            dead.check()

"""A source file's identity on real Spark and Delta: odd characters in folder and file names, a
corpus that moves or is copied, a file changed behind an unchanged size and mtime, files that
leave the source, and implausible dates and oversized lines in quarantine."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

import pytest
from conftest import make_config, table, write

from prizeflow import lake, snapshots
from prizeflow.errors import JobError
from prizeflow.sources import SourceError, discover

# Every character Spark or a URL decoder spells differently: a space, %, #, +, non-ASCII, a
# literal %20, and the glob characters Spark's readers would expand.
ODD_FOLDER = "pf dir/50%off #1+é/a[1]{x}?"
ODD_FILE = "mv_0000003 %20+ü#.txt"


def _movie_file(movie: int, users: range, day: str = "2005-01-01") -> str:
    return f"{movie}:\n" + "".join(f"{u},{u % 5 + 1},{day}\n" for u in users)


def _corpus(root: Path) -> Path:
    write(root / "training_set" / "mv_0000001.txt", _movie_file(1, range(1, 31)))
    write(root / "training_set" / "mv_0000002.txt", _movie_file(2, range(1, 21)))
    write(root / "training_set" / ODD_FILE, _movie_file(3, range(5, 25)))
    write(root / "movie_titles.txt", "1,2001,A\n2,2002,B\n3,2003,C, with comma\n")
    write(root / "probe.txt", "1:\n3\n4\n3:\n7\n")
    return root


def _versions(spark, config):
    return {t: lake.version(spark, lake.table_path(config.lake.root, t))
            for t in snapshots.INGESTED + (snapshots.TABLE,)}


def _keys(spark, config, name="ratings"):
    rows = table(spark, config, name).collect()
    return sorted((r.movie_id, r.user_id) for r in rows)


@pytest.mark.spark
def test_odd_characters_in_names_keep_one_identity(spark, tmp_path, ingest):
    source = _corpus(tmp_path / ODD_FOLDER)
    config = make_config(tmp_path)
    first = ingest(config, source)
    assert first["ratings"] == 70 and first["quarantined"] == 0 and first["files_ingested"] == 5
    names = {r.source_file for r in table(spark, config, "ratings").select("source_file")
             .distinct().collect()}
    assert names == {"training_set/mv_0000001.txt", "training_set/mv_0000002.txt",
                     f"training_set/{ODD_FILE}"}
    manifest = {r.source_file: r for r in table(spark, config, "ingest_files").collect()}
    assert manifest[f"training_set/{ODD_FILE}"].location == \
        f"file:{source / 'training_set' / ODD_FILE}"
    # The rows and the publish point name one ingest.
    assert {r.ingest_id for r in table(spark, config, "ratings").collect()} == {first["ingest_id"]}
    assert snapshots.latest(spark, config.lake.root).ingest_id == first["ingest_id"]

    # One more line in the oddly named file: read again, its own old rows are no duplicates.
    odd = source / "training_set" / ODD_FILE
    odd.write_text(odd.read_text() + "99,4,2005-02-02\n")
    again = ingest(config, source)
    assert again["files_ingested"] == 1 and again["quarantined"] == 0
    assert again["ratings"] == 71
    assert table(spark, config, "ratings").count() == 71
    assert table(spark, config, "ratings").where("movie_id = 3").count() == 21


@pytest.mark.spark
def test_a_moved_or_copied_corpus_is_the_same_data(spark, tmp_path, ingest):
    config = make_config(tmp_path)
    source = _corpus(tmp_path / "first")
    ingest(config, source)
    before, keys = _versions(spark, config), _keys(spark, config)

    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(source), str(moved))
    after_move = ingest(config, moved)
    assert after_move["files_ingested"] == 0 and after_move["files_unchanged"] == 5
    assert after_move["files_missing"] == 0 and after_move["quarantined"] == 0
    copied = tmp_path / "copy"
    shutil.copytree(moved, copied)  # new inodes, new modification times
    after_copy = ingest(config, copied)
    assert after_copy["files_ingested"] == 0
    assert _versions(spark, config) == before  # nothing was committed
    assert _keys(spark, config) == keys


@pytest.mark.spark
def test_a_change_behind_the_same_size_and_mtime_is_read_again(spark, tmp_path, ingest):
    config = make_config(tmp_path)
    source = _corpus(tmp_path / "corpus")
    ingest(config, source)
    path = source / "training_set" / "mv_0000002.txt"
    stat = path.stat()
    text = path.read_text().replace("20,1,2005-01-01", "20,5,2005-01-01")
    assert len(text) == stat.st_size
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    summary = ingest(config, source)
    assert summary["files_ingested"] == 1 and summary["ratings"] == 70
    row = table(spark, config, "ratings").where("movie_id = 2 AND user_id = 20").first()
    assert row.rating == 5.0


@pytest.mark.spark
def test_files_that_left_the_source_are_reported_and_removed_on_request(spark, tmp_path, ingest):
    source = _corpus(tmp_path / "corpus")
    config = make_config(tmp_path)
    ingest(config, source)
    (source / "training_set" / "mv_0000002.txt").unlink()
    (source / "probe.txt").unlink()
    kept = ingest(config, source)
    assert kept["files_missing"] == 2 and kept["files_removed"] == 0
    assert kept["missing_files"] == ["probe.txt", "training_set/mv_0000002.txt"]
    assert kept["ratings"] == 70 and table(spark, config, "ratings").count() == 70

    removing = config.override("ingest.remove_missing=true")
    removed = ingest(removing, source)
    assert removed["files_removed"] == 2 and removed["ratings"] == 50 and removed["probe"] == 0
    assert table(spark, config, "ratings").where("movie_id = 2").count() == 0
    assert table(spark, config, "ratings").count() == 50
    assert table(spark, config, "probe").count() == 0
    assert sorted(r.source_file for r in table(spark, config, "ingest_files").collect()) == [
        "movie_titles.txt", "training_set/mv_0000001.txt", f"training_set/{ODD_FILE}"]
    # The file comes back: its rows come back, nothing is a duplicate.
    write(source / "training_set" / "mv_0000002.txt", _movie_file(2, range(1, 21)))
    back = ingest(config, source)
    assert back["files_ingested"] == 1 and back["ratings"] == 70 and back["quarantined"] == 0


@pytest.mark.spark
def test_implausible_dates_and_long_lines_go_to_quarantine(spark, tmp_path, ingest):
    netflix = tmp_path / "netflix"
    long_line = "9" * 5000 + ",3,2005-01-01"
    write(netflix / "training_set" / "mv_0000001.txt",
          "1:\n1,3,2005-01-01\n2,3,1989-12-31\n3,3,2999-01-01\n4,3,1990-01-01\n"
          + long_line + "\n" + "".join(f"{u},4,2004-06-0{u % 9 + 1}\n" for u in range(10, 200)))
    config = make_config(tmp_path, ingest={"max_quarantine_fraction": 0.1})
    summary = ingest(config, netflix)
    assert summary["quarantine_reasons"] == {"bad_user_id": 1, "date_out_of_range": 2}
    rows = {r.line_no: r for r in table(spark, config, "quarantine").collect()}
    assert rows[3].reason == rows[4].reason == "date_out_of_range"
    assert rows[6].reason == "bad_user_id"
    assert rows[6].line == long_line[:1024] and rows[6].line_length == len(long_line)
    assert _keys(spark, config)[:3] == [(1, 1), (1, 4), (1, 10)]

    movielens = tmp_path / "ml"
    write(movielens / "u.data",
          "1\t1\t5\t881250949\n"           # 1997: kept
          "2\t1\t4\t881250949000\n"        # milliseconds: year 29,900
          "3\t1\t4\t999999999999999999\n"  # would overflow a date
          "4\t1\t4\t500000000\n"           # 1985: before ingest.earliest_date
          "5\t1\t4\t4102444800\n"          # 2100: in the future
          + "".join(f"{u}\t2\t3\t881250949\n" for u in range(10, 100)))
    write(movielens / "u.item", "1|A (1995)|01-Jan-1995||x" + "|0" * 19 + "\n"
          "2|B (1996)|01-Jan-1996||x" + "|0" * 19 + "\n")
    ml_config = make_config(tmp_path / "ml-lake", ingest={"max_quarantine_fraction": 0.1})
    ml = ingest(ml_config, movielens)
    assert ml["quarantine_reasons"] == {"bad_timestamp": 2, "date_out_of_range": 2}
    assert ml["ratings"] == 91
    by_line = {r.line_no: r.reason for r in table(spark, ml_config, "quarantine").collect()}
    assert by_line == {2: "bad_timestamp", 3: "bad_timestamp", 4: "date_out_of_range",
                       5: "date_out_of_range"}
    # The limits are config: a wider window keeps the 1985 rating.
    wide = make_config(tmp_path / "wide-lake", ingest={"max_quarantine_fraction": 0.1,
                                                       "earliest_date": "1970-01-01"})
    assert ingest(wide, movielens)["ratings"] == 92


def test_an_unreadable_folder_is_an_error_naming_it(tmp_path):
    source = _corpus(tmp_path / "corpus")
    hidden = source / "training_set" / "more"
    write(hidden / "mv_0000009.txt", _movie_file(9, range(1, 5)))
    hidden.chmod(0o000)
    source.chmod(0o755)
    try:
        if os.geteuid() != 0:
            with pytest.raises(SourceError, match=f"cannot read source folder {hidden}: "
                                                  "Permission denied"):
                discover(str(source))
            return
        # As root every folder is readable: list it in a forked child that has dropped to an
        # unprivileged user. The child already holds every module it needs, so the checkout and
        # its venv need not be readable by that user wherever they live (a private temporary
        # folder, root's home).
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("needs a 'nobody' user to drop root")
        for folder in (tmp_path, *tmp_path.parents):
            folder.chmod(folder.stat().st_mode | 0o001)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report the listing's outcome through the pipe, then exit
            try:
                os.close(read_end)
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                try:
                    discover(str(source))
                    outcome = "listed without an error"
                except SourceError as error:
                    outcome = str(error)
                os.write(write_end, outcome.encode("utf-8"))
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            outcome = pipe.read().decode("utf-8")
        os.waitpid(pid, 0)
        assert outcome == f"cannot read source folder {hidden}: Permission denied"
    finally:
        hidden.chmod(0o755)


@pytest.mark.spark
def test_a_file_read_again_unchanged_keeps_its_keys_against_a_new_file(spark, tmp_path, ingest,
                                                                        monkeypatch):
    """Listed by Spark (as on object storage), a file touched but unchanged is read again and
    kept: its rows in the table still hold their keys, so a new file that sorts before it and
    repeats one of them is the duplicate."""
    from prizeflow import ingestion
    monkeypatch.setattr(ingestion, "listed_by_spark", lambda source, connect: True)
    config = make_config(tmp_path, ingest={"max_quarantine_fraction": 0.5})
    source = _corpus(tmp_path / "corpus")
    ingest(config, source)
    touched = source / "training_set" / "mv_0000002.txt"
    os.utime(touched, (touched.stat().st_atime + 60, touched.stat().st_mtime + 60))
    write(source / "training_set" / "mv_0000000.txt", "2:\n5,1,2005-03-03\n99,4,2005-03-03\n")
    summary = ingest(config, source)
    assert summary["files_reread_unchanged"] == 1 and summary["files_ingested"] == 1
    assert summary["quarantine_reasons"] == {"duplicate": 1} and summary["ratings"] == 71
    rows = table(spark, config, "ratings").where("movie_id = 2 AND user_id = 5").collect()
    assert [(r.rating, r.source_file) for r in rows] == [(1.0, "training_set/mv_0000002.txt")]
    assert table(spark, config, "ratings").count() == 71
    (line,) = table(spark, config, "quarantine").collect()
    assert (line.source_file, line.line_no, line.line, line.reason) == (
        "training_set/mv_0000000.txt", 2, "5,1,2005-03-03", "duplicate")


@pytest.mark.spark
def test_a_file_changed_while_it_is_read_fails_before_any_write(spark, tmp_path, ingest,
                                                               monkeypatch):
    """A duplicate's text is read again before the first write; if its file changed since it
    was parsed, the ingest fails naming the file, and nothing is written."""
    from prizeflow import ingestion
    config = make_config(tmp_path, ingest={"max_quarantine_fraction": 0.1})
    source = _corpus(tmp_path / "corpus")
    ingest(config, source)
    before, keys = _versions(spark, config), _keys(spark, config)
    changing = source / "training_set" / "mv_0000002.txt"
    write(changing, _movie_file(2, range(1, 21)) + "7,2,2005-04-04\n")  # line 22: a duplicate
    original_tally = ingestion._tally

    def tally_then_rewrite(*args, **kwargs):
        counted = original_tally(*args, **kwargs)
        # Another writer replaces the file after it was parsed: line 22 now says another thing.
        write(changing, _movie_file(2, range(1, 21)) + "8,5,2005-04-04\n")
        return counted

    monkeypatch.setattr(ingestion, "_tally", tally_then_rewrite)
    with pytest.raises(JobError, match=r"^training_set/mv_0000002.txt changed while it was read: "
                                       r"its line 22 is not the line parsed before; nothing was "
                                       r"written"):
        ingest(config, source)
    assert _versions(spark, config) == before and _keys(spark, config) == keys
    assert table(spark, config, "quarantine").count() == 0
    # A stable file's duplicate gets its text back: test_ingest's bad-line kinds (line 9) and
    # the test above.

"""Finding corpus files and telling their format."""

import pytest
from conftest import write

from prizeflow.sources import SourceError, discover


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

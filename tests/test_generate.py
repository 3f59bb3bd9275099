"""The synthetic corpus: exact Netflix layout, deterministic, realistic statistics."""

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from prizeflow.generate import MAX_CUSTOMER_ID, generate_corpus, make_spec


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _read_sections(path: Path) -> dict[int, list[str]]:
    sections: dict[int, list[str]] = {}
    movie = None
    for line in path.read_text(encoding="ascii").split("\n")[:-1]:
        if line.endswith(":"):
            movie = int(line[:-1])
            assert movie not in sections, "each movie header appears once"
            sections[movie] = []
        else:
            sections[movie].append(line)
    return sections


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    summary = generate_corpus(make_spec(out, 60_000, seed=11))
    return out, summary


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, corpus):
    out, _ = corpus
    again = tmp_path / "again"
    generate_corpus(make_spec(again, 60_000, seed=11))
    assert _digest(again) == _digest(out)
    other = tmp_path / "other"
    generate_corpus(make_spec(other, 60_000, seed=12))
    assert _digest(other) != _digest(out)


def test_layouts_hold_the_same_ratings(tmp_path, corpus):
    out, _ = corpus
    combined = tmp_path / "combined"
    generate_corpus(make_spec(combined, 60_000, seed=11, layout="combined_data"))
    from_combined = {}
    for path in sorted(combined.glob("combined_data_*.txt")):
        from_combined.update(_read_sections(path))
    from_files = {}
    for path in sorted((out / "training_set").glob("mv_*.txt")):
        from_files.update(_read_sections(path))
    assert from_combined == from_files
    assert len(list(combined.glob("combined_data_*.txt"))) == 4


def test_statistics_look_like_the_prize_data(corpus):
    out, summary = corpus
    stars, users, per_movie, days = Counter(), Counter(), [], []
    training = {}
    for path in sorted((out / "training_set").glob("mv_*.txt")):
        ((movie, lines),) = _read_sections(path).items()
        assert path.name == f"mv_{movie:07d}.txt"
        per_movie.append(len(lines))
        for line in lines:
            user, star, day = line.split(",")
            stars[int(star)] += 1
            users[int(user)] += 1
            days.append(day)
            training[(movie, int(user))] = day
    total = sum(stars.values())
    assert total == summary["ratings"] == 60_000 == len(training)
    mean = sum(s * c for s, c in stars.items()) / total
    assert 3.45 < mean < 3.75
    assert stars.most_common(1)[0][0] == 4
    assert set(stars) == {1, 2, 3, 4, 5}
    assert min(days) >= "1998-01-01" and max(days) <= "2005-12-31"
    assert all(1 <= u <= MAX_CUSTOMER_ID for u in users)
    assert max(users) > 100_000  # sparse ids, like the real customer ids
    # Long tails: the busiest movie and user far above the median.
    per_movie.sort()
    assert per_movie[-1] > 5 * per_movie[len(per_movie) // 2]
    activity = sorted(users.values())
    assert activity[-1] > 4 * activity[len(activity) // 2]

    probe = _read_sections(out / "probe.txt")
    pairs = [(m, int(u)) for m, us in probe.items() for u in us]
    assert list(probe) == sorted(probe)
    assert all(p in training for p in pairs)
    assert 0.008 < len(pairs) / total < 0.02
    qualifying = _read_sections(out / "qualifying.txt")
    qual_pairs = [(m, int(line.split(",")[0])) for m, ls in qualifying.items() for line in ls]
    assert qual_pairs and not any(p in training for p in qual_pairs)
    assert len(qual_pairs) == summary["qualifying"]


def test_titles_are_latin1_with_commas_and_null_years(corpus):
    out, summary = corpus
    raw = (out / "movie_titles.txt").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    rows = raw.decode("iso-8859-1").splitlines()
    assert len(rows) == summary["movies"]
    assert [int(r.split(",", 2)[0]) for r in rows] == list(range(1, len(rows) + 1))
    assert any(r.split(",", 2)[1] == "NULL" for r in rows)
    assert any("," in r.split(",", 2)[2] for r in rows)
    assert any("é" in r for r in rows)


def test_impossible_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="exceeds users x movies"):
        make_spec(tmp_path, 1000, users=10, movies=10)
    with pytest.raises(ValueError, match="at least --movies"):
        make_spec(tmp_path, 5, movies=10)
    with pytest.raises(ValueError, match="layout"):
        make_spec(tmp_path, 100, layout="zip")


def test_a_dense_tiny_corpus_fills_exactly(tmp_path):
    summary = generate_corpus(make_spec(tmp_path, 100, users=10, movies=10, seed=2))
    assert summary["ratings"] == 100 and summary["users"] == 10

"""Synthetic ratings corpus in the exact Netflix Prize file layout.

Run as ``prizeflow generate --out DIR --ratings N [--users U --movies M --seed S --layout L]``.

Ratings come from a planted model: global mean + user bias + movie bias + low-rank factors +
noise, rounded to 1..5, so a good model measurably beats the baselines. Movie popularity and user
activity are long-tailed (log-normal), dates run 1998-2005 skewed late, customer ids are sparse in
1..2,649,429 like the real ones. The corpus is written one movie at a time (memory is bounded by
the largest movie, never N ratings), and each movie draws from its own random stream seeded by
(seed, movie id), so the output depends only on the arguments.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

FULL_RATINGS = 100_480_507
FULL_USERS = 480_189
FULL_MOVIES = 17_770
MAX_CUSTOMER_ID = 2_649_429
FIRST_DAY = dt.date(1998, 1, 1)
LAST_DAY = dt.date(2005, 12, 31)
PROBE_FRACTION = 0.014
QUALIFYING_FRACTION = 0.028
COMBINED_FILES = 4
LAYOUTS = ("training_set", "combined_data")

_ADJECTIVES = ["Silent", "Broken", "Golden", "Last", "Hidden", "Crimson", "Frozen", "Wild",
               "Lonely", "Eternal", "Midnight", "Electric", "Forgotten", "Savage", "Gentle"]
_NOUNS = ["River", "Empire", "Garden", "Detective", "Summer", "Mirror", "Highway", "Kingdom",
          "Orchestra", "Harbor", "Witness", "Carnival", "Frontier", "Labyrinth", "Lighthouse"]
# Latin-1 letters on purpose: movie_titles.txt is ISO-8859-1 in the real corpus.
_ACCENTED = ["Amélie", "Café", "Señor", "Über", "Noël", "Fräulein", "Déjà Vu", "São Paulo",
             "Pokémon", "Mañana", "Château", "Björk"]


@dataclass
class CorpusSpec:
    out_dir: Path
    ratings: int
    users: int
    movies: int
    seed: int = 0
    layout: str = "training_set"
    rank: int = 8
    global_mean: float = 3.55
    user_bias_sd: float = 0.45
    movie_bias_sd: float = 0.45
    factor_sd: float = 0.5  # sd of the planted interaction p_u . q_i
    noise_sd: float = 0.75


def default_movies(ratings: int) -> int:
    """Movies in proportion to the real corpus (about 5,650 ratings each); small corpora get
    more movies than that (about sqrt(N)/1.5) so the rating matrix stays a matrix."""
    proportional = round(ratings * FULL_MOVIES / FULL_RATINGS)
    return max(1, min(FULL_MOVIES, ratings, max(proportional, round(ratings ** 0.5 / 1.5))))


def default_users(ratings: int, movies: int) -> int:
    """Users in proportion to the real corpus (about 209 ratings each), and enough that the
    matrix is at most a quarter full."""
    proportional = round(ratings * FULL_USERS / FULL_RATINGS)
    return max(1, min(MAX_CUSTOMER_ID, max(proportional, -(-ratings * 4 // movies))))


def make_spec(out_dir: str | os.PathLike, ratings: int, users: int | None = None,
              movies: int | None = None, seed: int = 0, layout: str = "training_set") -> CorpusSpec:
    movies = movies if movies is not None else default_movies(ratings)
    users = users if users is not None else default_users(ratings, movies)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if ratings < 1 or users < 1 or movies < 1:
        raise ValueError("ratings, users and movies must be positive")
    if users > MAX_CUSTOMER_ID:
        raise ValueError(f"at most {MAX_CUSTOMER_ID} users (customer ids are 1..{MAX_CUSTOMER_ID})")
    if ratings < movies:
        raise ValueError(f"--ratings ({ratings}) must be at least --movies ({movies}): "
                         "every movie gets at least one rating")
    if ratings > users * movies:
        raise ValueError(f"--ratings ({ratings}) exceeds users x movies ({users * movies})")
    return CorpusSpec(Path(out_dir), ratings, users, movies, seed, layout)


@dataclass
class _World:
    """The planted model: everything drawn once, before any movie is written."""
    customer_ids: np.ndarray
    user_cdf: np.ndarray
    user_bias: np.ndarray
    user_factors: np.ndarray
    movie_bias: np.ndarray
    movie_factors: np.ndarray
    movie_counts: np.ndarray
    movie_first_day: np.ndarray
    date_strings: list[str] = field(repr=False)


def _movie_counts(rng: np.random.Generator, spec: CorpusSpec, popularity: np.ndarray) -> np.ndarray:
    counts = np.ones(spec.movies, dtype=np.int64)
    counts += rng.multinomial(spec.ratings - spec.movies, popularity / popularity.sum())
    # A movie cannot have more ratings than there are users: spill the excess elsewhere.
    while (over := counts > spec.users).any():
        excess = int((counts[over] - spec.users).sum())
        counts[over] = spec.users
        room = (spec.users - counts).astype(np.float64)
        counts += rng.multinomial(excess, room / room.sum())
    return counts


def _build_world(spec: CorpusSpec) -> _World:
    rng = np.random.default_rng([spec.seed, 0])
    customer_ids = rng.choice(MAX_CUSTOMER_ID, size=spec.users, replace=False).astype(np.int64) + 1
    activity = rng.lognormal(0.0, 1.0, spec.users)
    user_cdf = np.cumsum(activity / activity.sum())
    popularity = rng.lognormal(0.0, 1.5, spec.movies)
    log_pop = np.log(popularity)
    # Popular movies are rated a little higher, as in the real corpus.
    movie_bias = (rng.normal(0.0, spec.movie_bias_sd, spec.movies)
                  + 0.1 * (log_pop - log_pop.mean()) / (log_pop.std() or 1.0))
    factor_scale = np.sqrt(spec.factor_sd / np.sqrt(spec.rank))
    n_days = (LAST_DAY - FIRST_DAY).days + 1
    return _World(
        customer_ids=customer_ids,
        user_cdf=user_cdf,
        user_bias=rng.normal(0.0, spec.user_bias_sd, spec.users),
        user_factors=rng.normal(0.0, factor_scale, (spec.users, spec.rank)),
        movie_bias=movie_bias,
        movie_factors=rng.normal(0.0, factor_scale, (spec.movies, spec.rank)),
        movie_counts=_movie_counts(rng, spec, popularity),
        movie_first_day=(rng.beta(2.0, 1.3, spec.movies) * (n_days - 30)).astype(np.int64),
        date_strings=[(FIRST_DAY + dt.timedelta(days=d)).isoformat() for d in range(n_days)],
    )


def _sample_users(rng: np.random.Generator, world: _World, count: int,
                  exclude: np.ndarray | None = None) -> np.ndarray:
    """``count`` distinct user indices drawn by activity, none of them in ``exclude``."""
    n_users = len(world.user_cdf)
    chosen = np.empty(0, dtype=np.int64)
    for _ in range(8):
        need = count - len(chosen)
        if need <= 0:
            break
        draw = np.searchsorted(world.user_cdf, rng.random(int(need * 1.3) + 8), side="right")
        draw = np.minimum(draw, n_users - 1)
        if exclude is not None:
            draw = draw[~np.isin(draw, exclude)]
        chosen = np.union1d(chosen, draw) if len(chosen) else np.unique(draw)
    if len(chosen) < count:
        # Heavy collisions (a movie rated by most users): top up uniformly from who is left.
        blocked = chosen if exclude is None else np.union1d(chosen, exclude)
        left = np.setdiff1d(np.arange(n_users), blocked)
        chosen = np.union1d(chosen, rng.choice(left, size=min(count - len(chosen), len(left)),
                                               replace=False))
    # Drop the surplus at random, then shuffle: files list customers in no particular order.
    return rng.permutation(chosen)[:count]


@dataclass
class _MovieDraw:
    users: np.ndarray
    stars: np.ndarray
    days: np.ndarray
    probe: np.ndarray
    qualifying_users: np.ndarray
    qualifying_days: np.ndarray


def _draw_movie(spec: CorpusSpec, world: _World, movie_index: int) -> _MovieDraw:
    rng = np.random.default_rng([spec.seed, 1, movie_index])
    n = int(world.movie_counts[movie_index])
    users = _sample_users(rng, world, n)
    score = (spec.global_mean + world.user_bias[users] + world.movie_bias[movie_index]
             + world.user_factors[users] @ world.movie_factors[movie_index]
             + rng.normal(0.0, spec.noise_sd, n))
    stars = np.clip(np.rint(score), 1, 5).astype(np.int64)
    first = int(world.movie_first_day[movie_index])
    span = len(world.date_strings) - first

    def days(k: int) -> np.ndarray:
        return first + (rng.random(k) ** 0.7 * span).astype(np.int64).clip(0, span - 1)

    probe = rng.random(n) < PROBE_FRACTION
    n_qual = min(int(rng.binomial(n, QUALIFYING_FRACTION)), len(world.user_cdf) - n)
    qual_users = _sample_users(rng, world, n_qual, exclude=users) if n_qual > 0 else users[:0]
    return _MovieDraw(users, stars, days(n), probe, qual_users, days(len(qual_users)))


def _title(rng: np.random.Generator, movie_id: int) -> str:
    kind = rng.random()
    adjective = _ADJECTIVES[rng.integers(len(_ADJECTIVES))]
    noun = _NOUNS[rng.integers(len(_NOUNS))]
    if kind < 0.03:
        return f"{noun}, {adjective} and {_NOUNS[rng.integers(len(_NOUNS))]}"
    if kind < 0.08:
        return f"{_ACCENTED[rng.integers(len(_ACCENTED))]}: The {adjective} {noun}"
    if kind < 0.12:
        return f"The {adjective} {noun}: Season {movie_id % 7 + 1}"
    return f"The {adjective} {noun}"


def _write_titles(spec: CorpusSpec, path: Path) -> None:
    rng = np.random.default_rng([spec.seed, 2])
    null_years = set(rng.choice(spec.movies, size=max(1, round(spec.movies * 7 / FULL_MOVIES)),
                                replace=False).tolist())
    rows = []
    for index in range(spec.movies):
        year = "NULL" if index in null_years else str(int(rng.integers(1915, 2006)))
        rows.append(f"{index + 1},{year},{_title(rng, index + 1)}\n")
    # Make sure the awkward cases exist even in a tiny corpus.
    rows[0] = f"1,{rows[0].split(',')[1]},Amélie, Café and the Señor of Noël\n"
    path.write_bytes("".join(rows).encode("iso-8859-1"))


def _combined_file_of(world: _World) -> np.ndarray:
    """Movies split over combined_data_1..4 in id order, about equal ratings in each."""
    cumulative = np.cumsum(world.movie_counts)
    share = cumulative / cumulative[-1]
    return np.minimum((share * COMBINED_FILES - 1e-12).astype(np.int64), COMBINED_FILES - 1)


def generate_corpus(spec: CorpusSpec) -> dict:
    """Write the corpus under ``spec.out_dir``; returns counts of what was written."""
    out = spec.out_dir
    out.mkdir(parents=True, exist_ok=True)
    world = _build_world(spec)
    _write_titles(spec, out / "movie_titles.txt")
    if spec.layout == "training_set":
        (out / "training_set").mkdir(exist_ok=True)
        file_of_movie = None
        combined = []
    else:
        file_of_movie = _combined_file_of(world)
        combined = [open(out / f"combined_data_{i + 1}.txt", "w", encoding="ascii", newline="\n")
                    for i in range(COMBINED_FILES)]
    rated = np.zeros(spec.users, dtype=bool)
    totals = {"ratings": 0, "probe": 0, "qualifying": 0}
    star_counts = np.zeros(6, dtype=np.int64)
    dates = world.date_strings
    ids = world.customer_ids
    try:
        with open(out / "probe.txt", "w", encoding="ascii", newline="\n") as probe_file, \
                open(out / "qualifying.txt", "w", encoding="ascii", newline="\n") as qual_file:
            for index in range(spec.movies):
                movie_id = index + 1
                draw = _draw_movie(spec, world, index)
                rated[draw.users] = True
                customer = ids[draw.users].tolist()
                body = "\n".join([f"{u},{s},{dates[d]}" for u, s, d in
                                  zip(customer, draw.stars.tolist(), draw.days.tolist())])
                text = f"{movie_id}:\n{body}\n"
                if file_of_movie is None:
                    with open(out / "training_set" / f"mv_{movie_id:07d}.txt", "w",
                              encoding="ascii", newline="\n") as handle:
                        handle.write(text)
                else:
                    combined[file_of_movie[index]].write(text)
                probe_users = ids[draw.users[draw.probe]].tolist()
                if probe_users:
                    probe_file.write(f"{movie_id}:\n" + "".join(f"{u}\n" for u in probe_users))
                if len(draw.qualifying_users):
                    qual_file.write(f"{movie_id}:\n" + "".join(
                        f"{u},{dates[d]}\n" for u, d in
                        zip(ids[draw.qualifying_users].tolist(), draw.qualifying_days.tolist())))
                totals["ratings"] += len(customer)
                totals["probe"] += len(probe_users)
                totals["qualifying"] += len(draw.qualifying_users)
                star_counts += np.bincount(draw.stars, minlength=6)
                if movie_id % 1000 == 0:
                    logger.info("generated %d/%d movies, %d ratings", movie_id, spec.movies,
                                totals["ratings"])
    finally:
        for handle in combined:
            handle.close()
    mean = float((star_counts * np.arange(6)).sum() / max(1, star_counts.sum()))
    return {
        "out": str(out), "layout": spec.layout, "seed": spec.seed,
        "ratings": totals["ratings"], "users": int(rated.sum()), "movies": spec.movies,
        "probe": totals["probe"], "qualifying": totals["qualifying"],
        "mean_rating": round(mean, 4),
        "star_counts": {str(s): int(star_counts[s]) for s in range(1, 6)},
    }

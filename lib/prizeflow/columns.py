"""Column names of prizeflow's tables and frames, in one place.

The Delta tables' schemas are built from these in :mod:`prizeflow.parse`; every transformation
refers to a column through them, so a rename is one line here (plus a migration of the tables).
"""

USER_ID = "user_id"
MOVIE_ID = "movie_id"
RATING = "rating"
RATED_ON = "rated_on"
YEAR = "year"
TITLE = "title"
GENRES = "genres"

# Scoring frames: the prediction, and the tag that tells history rows from the pairs to score.
PREDICTION = "prediction"
TAG = "tag"
# A rating's day as days since 1970-01-01 (the time-aware baseline's frames).
DAY = "day"

# Where a parsed row came from (the quarantine table keeps these with the reason).
SOURCE_FILE = "source_file"
LINE_NO = "line_no"

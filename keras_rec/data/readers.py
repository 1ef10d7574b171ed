"""Readers for the benchmark file formats. Every error names the file and line."""

from __future__ import annotations

import datetime
import math
import os
import re
from collections.abc import Iterator

import numpy as np

from keras_rec.data.interactions import Interactions


class DataFormatError(ValueError):
    """A data file does not have the format its reader expects."""


def _lines(path: str) -> Iterator[tuple[int, str]]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"Data file not found: {path}")
    empty = True
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if line:
                empty = False
                yield number, line
    if empty:
        raise DataFormatError(f"{path}: the file is empty")


#: An integer field: digits with an optional sign (Python's `int` would
#: also take `1_0` as 10).
_INTEGER = re.compile(r"[+-]?[0-9]+")
_INT64 = np.iinfo(np.int64)


def _to_int(token: str, path: str, number: int, what: str) -> int:
    if not _INTEGER.fullmatch(token):
        raise DataFormatError(
            f"{path}:{number}: {what} must be an integer, got {token!r}"
        )
    value = int(token)
    if not _INT64.min <= value <= _INT64.max:
        raise DataFormatError(
            f"{path}:{number}: {what} {token} does not fit in 64 bits"
        )
    return value


def _to_float(token: str, path: str, number: int, what: str) -> float:
    try:
        if "_" in token:  # `float` would read 1_0 as 10
            raise ValueError(token)
        value = float(token)
    except ValueError:
        raise DataFormatError(
            f"{path}:{number}: {what} must be a number, got {token!r}"
        ) from None
    if not math.isfinite(value):
        raise DataFormatError(
            f"{path}:{number}: {what} must be a finite number, got {token!r}"
        )
    return value


#: The largest 0-based id: the id count (`max id + 1`) must fit in int32,
#: the index type of the models' embedding tables.
_MAX_ID = int(np.iinfo(np.int32).max) - 1


def _to_id(token: str, path: str, number: int, what: str) -> int:
    """A 0-based id used as an index as it is: in `[0, _MAX_ID]`."""
    value = _to_int(token, path, number, what)
    if value < 0:
        raise DataFormatError(
            f"{path}:{number}: {what} id must be >= 0 (ids are 0-based), got {token!r}"
        )
    if value > _MAX_ID:
        raise DataFormatError(
            f"{path}:{number}: {what} id {token} is out of range: ids must be "
            f"at most {_MAX_ID}, so that the id count fits in int32"
        )
    return value


def _is_header(tokens: list[str], header: tuple[str, ...]) -> bool:
    """Whether `tokens` are the column names `header` (any case, BOM and
    surrounding whitespace ignored)."""
    names = [token.strip().lower() for token in tokens]
    if names:
        names[0] = names[0].lstrip("\ufeff").strip()
    return names == [name.lower() for name in header]


def read_delimited(
    path: str,
    sep: str | None,
    columns: tuple[str, ...],
    optional: int = 0,
    header: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Reads rows of `columns` (the last `optional` of them may be absent).

    `user` and `item` and `timestamp` columns are parsed as integers, `rating`
    as float. Returns a dict of arrays; an absent optional column is omitted.
    Every row must have as many fields as the first. With `header` (column
    names such as `("userId", "movieId", "rating", "timestamp")`), the first
    line is skipped if its fields are these names (any case, a UTF-8 BOM and
    whitespace ignored); any other first line is read as data, so a bad one
    is reported, not dropped.
    """
    required = len(columns) - optional
    values: dict[str, list] = {name: [] for name in columns}
    width = width_line = None  # the rows' field count, set by line `width_line`
    first, number = None, 0  # the first line's number, the current one's
    try:
        for number, line in _lines(path):
            tokens = line.split(sep)
            if first is None:
                first = number
                if header and _is_header(tokens, header):
                    continue
            if not required <= len(tokens) <= len(columns):
                raise DataFormatError(
                    f"{path}:{number}: expected {required} to {len(columns)} "
                    f"fields ({', '.join(columns)}) separated by "
                    f"{sep or 'whitespace'!r}, got {len(tokens)}: {line[:80]!r}"
                )
            if width is None:
                width, width_line = len(tokens), number
            elif len(tokens) != width:
                raise DataFormatError(
                    f"{path}:{number}: line {number} has {len(tokens)} fields, "
                    f"line {width_line} has {width}; every row must have the same "
                    f"fields: {line[:80]!r}"
                )
            for name, token in zip(columns, tokens, strict=False):
                if name == "rating":
                    values[name].append(_to_float(token, path, number, name))
                else:
                    values[name].append(_to_int(token, path, number, name))
    except DataFormatError as error:
        if header and number == first:  # say why it was not taken for a header
            raise DataFormatError(
                f"{error} (the first line is read as data: it is not the header "
                f"{','.join(header)!r})"
            ) from None
        raise
    if width is None:
        raise DataFormatError(f"{path}: the file has a header but no rows")
    return {
        name: np.asarray(values[name], np.float32 if name == "rating" else np.int64)
        for name in columns[:width]
    }


def _interactions(columns: dict, name: str, **kwargs) -> Interactions:
    return Interactions.from_raw(
        columns["user"],
        columns["item"],
        timestamps=columns.get("timestamp"),
        ratings=columns.get("rating"),
        name=name,
        **kwargs,
    )


def read_movielens_100k(path: str) -> Interactions:
    """ML-100K `u.data`: `user \\t item \\t rating \\t timestamp`."""
    cols = read_delimited(path, "\t", ("user", "item", "rating", "timestamp"))
    return _interactions(cols, "ml-100k")


def read_movielens_dat(path: str, name: str = "ml-1m") -> Interactions:
    """ML-1M/10M `ratings.dat` (`user::item::rating::timestamp`) or the pair
    file `interactions.dat` (`user::item`).

    A pair file gives no timestamps, and its row order (ratings.dat's) is not
    time order, so `make_split` refuses leave-one-out protocols on it.
    """
    cols = read_delimited(path, "::", ("user", "item", "rating", "timestamp"), 2)
    return _interactions(cols, name)


#: The header line of ML-20M/25M `ratings.csv`.
_MOVIELENS_CSV_HEADER = ("userId", "movieId", "rating", "timestamp")


def read_movielens_csv(path: str, name: str = "ml-20m") -> Interactions:
    """ML-20M/25M `ratings.csv` (`userId,movieId,rating,timestamp`).

    The header line is skipped when there is one; a file without it (a
    converted copy) loses no row. Any other first line is read as data.
    """
    cols = read_delimited(
        path, ",", ("user", "item", "rating", "timestamp"), header=_MOVIELENS_CSV_HEADER
    )
    return _interactions(cols, name)


def read_ncf_train(
    path: str, num_users: int | None = None, num_items: int | None = None
) -> Interactions:
    """NCF training file: `*.train.rating` (`user \\t item \\t rating \\t ts`)
    or a pair file (`user \\t item`), with 0-based ids kept as they are."""
    cols = read_delimited(path, None, ("user", "item", "rating", "timestamp"), 2)
    return _interactions(
        cols,
        "ncf",
        already_contiguous=True,
        num_users=num_users,
        num_items=num_items,
    )


def read_ncf_test_rating(path: str) -> tuple[np.ndarray, np.ndarray]:
    """NCF `*.test.rating`: returns (users, test items), one row per user."""
    cols = read_delimited(path, None, ("user", "item", "rating", "timestamp"), 2)
    return cols["user"], cols["item"]


def read_ncf_test_negative(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NCF `*.test.negative`: `(user,item) \\t neg1 ... negN`.

    Returns (users, test items, negatives `[rows, N]`).
    """
    users, items, negatives = [], [], []
    width = None
    for number, line in _lines(path):
        tokens = line.split()
        head = tokens[0]
        if not (head.startswith("(") and head.endswith(")") and "," in head):
            raise DataFormatError(
                f"{path}:{number}: expected '(user,item)' first, got {head!r}"
            )
        user, item = head[1:-1].split(",", 1)
        users.append(_to_int(user, path, number, "user"))
        items.append(_to_int(item, path, number, "item"))
        row = [_to_int(t, path, number, "negative item") for t in tokens[1:]]
        if width is None:
            width = len(row)
        if not row:
            raise DataFormatError(f"{path}:{number}: the line has no negatives")
        if len(row) != width:
            raise DataFormatError(
                f"{path}:{number}: expected {width} negatives, got {len(row)}"
            )
        negatives.append(row)
    return (
        np.asarray(users, np.int64),
        np.asarray(items, np.int64),
        np.asarray(negatives, np.int64),
    )


def read_user_item_pairs(path: str, name: str = "sequences") -> Interactions:
    """`user item` per line in chronological order (SASRec's `Video.txt`).

    The row order is kept as the time order (a synthetic increasing timestamp).
    """
    cols = read_delimited(path, None, ("user", "item"))
    cols["timestamp"] = np.arange(len(cols["user"]), dtype=np.int64)
    return _interactions(cols, name)


def _read_adjacency_lines(
    path: str, zero_based: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """`user item item ...` lines; with `zero_based`, ids are indices as they
    are and must lie in `[0, _MAX_ID]` (else raw ids, remapped later)."""
    parse = _to_id if zero_based else _to_int
    users, items = [], []
    first_line = {}
    for number, line in _lines(path):
        tokens = line.split()
        user = parse(tokens[0], path, number, "user")
        if user in first_line:
            raise DataFormatError(
                f"{path}:{number}: user {user} already has a line (line "
                f"{first_line[user]}); each user must have exactly one"
            )
        first_line[user] = number
        for token in tokens[1:]:
            users.append(user)
            items.append(parse(token, path, number, "item"))
    return np.asarray(users, np.int64), np.asarray(items, np.int64)


def read_user_sequences(path: str, name: str = "sequences") -> Interactions:
    """`user item item ...` per line, chronological (S3-Rec/ICLRec Beauty).

    Raw ids are remapped to contiguous ids; row order becomes the time order.
    """
    users, items = _read_adjacency_lines(path)
    return Interactions.from_raw(
        users, items, timestamps=np.arange(len(users)), name=name
    )


def read_ngcf_split(
    train_path: str, test_path: str, name: str = "gowalla"
) -> tuple[Interactions, Interactions]:
    """NGCF/LightGCN `train.txt` and `test.txt` (`user item item ...`, 0-based).

    Both share one id space: `max id + 1` over the two files. Ids must lie in
    `[0, 2**31 - 2]` (the id count must fit in int32).
    """
    train_users, train_items = _read_adjacency_lines(train_path, zero_based=True)
    test_users, test_items = _read_adjacency_lines(test_path, zero_based=True)
    if not train_items.size:
        raise DataFormatError(f"{train_path}: no line lists any item")
    num_users = int(max(train_users.max(), test_users.max(initial=-1))) + 1
    num_items = int(max(train_items.max(), test_items.max(initial=-1))) + 1

    def build(users, items):
        return Interactions(users, items, num_users, num_items, name=name)

    return build(train_users, train_items), build(test_users, test_items)


#: A `YYYY-MM-DD` date (`date.fromisoformat` also takes `20050906`, `2005-W36-2`).
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _to_day(token: str, epoch: datetime.date, path: str, number: int) -> int:
    """Days from `epoch` to the `YYYY-MM-DD` date `token`."""
    try:
        if not _DATE.fullmatch(token):
            raise ValueError(token)
        return (datetime.date.fromisoformat(token) - epoch).days
    except ValueError:
        raise DataFormatError(
            f"{path}:{number}: date must be YYYY-MM-DD, got {token!r}"
        ) from None


def read_netflix(paths: list[str], name: str = "netflix") -> Interactions:
    """Netflix Prize ratings: blocks of `movie:` then `customer,rating,date`.

    Reads the Kaggle files `combined_data_{1..4}.txt` or the original
    `training_set/mv_*.txt` (one block each); dates (`YYYY-MM-DD`) become
    days since 1970-01-01. About 100M lines in all: a few minutes to read.
    """
    columns: dict[str, list] = {"user": [], "item": [], "rating": [], "timestamp": []}
    epoch = datetime.date(1970, 1, 1)
    days: dict[str, int] = {}  # a few thousand distinct dates in 100M lines
    for path in paths:
        movie = None
        for number, line in _lines(path):
            if line.endswith(":"):
                movie = _to_int(line[:-1], path, number, "movie id")
                continue
            if movie is None:
                raise DataFormatError(
                    f"{path}:{number}: a rating before any `movie:` line: {line[:80]!r}"
                )
            tokens = line.split(",")
            if len(tokens) != 3:
                raise DataFormatError(
                    f"{path}:{number}: expected `customer,rating,date`, got "
                    f"{line[:80]!r}"
                )
            day = days.get(tokens[2])
            if day is None:
                day = days[tokens[2]] = _to_day(tokens[2], epoch, path, number)
            columns["user"].append(_to_int(tokens[0], path, number, "customer id"))
            columns["item"].append(movie)
            columns["rating"].append(_to_float(tokens[1], path, number, "rating"))
            columns["timestamp"].append(day)
    arrays = {
        key: np.asarray(values, np.float32 if key == "rating" else np.int64)
        for key, values in columns.items()
    }
    if not arrays["user"].size:
        raise DataFormatError(f"{', '.join(paths)}: no ratings")
    return _interactions(arrays, name)

"""Readers of every benchmark file format, on small files the tests write."""

from __future__ import annotations

import numpy as np
import pytest

from keras_rec.data import readers
from keras_rec.data.readers import DataFormatError


def raw_pairs(data):
    """The (raw user, raw item) pairs of `Interactions`, in row order."""
    users = (
        data.user_ids if data.raw_user_ids is None else data.raw_user_ids[data.user_ids]
    )
    items = (
        data.item_ids if data.raw_item_ids is None else data.raw_item_ids[data.item_ids]
    )
    return list(zip(users.tolist(), items.tolist(), strict=True))


# --- well-formed files -------------------------------------------------------


def test_movielens_100k(write_file):
    path = write_file("u.data", "7\t30\t5\t300\n3\t10\t2\t100\n7\t10\t4\t200\n")
    data = readers.read_movielens_100k(path)
    assert data.name == "ml-100k"
    assert (data.num_users, data.num_items, len(data)) == (2, 2, 3)
    # Raw ids are mapped in sorted raw order: users 3 -> 0, 7 -> 1.
    np.testing.assert_array_equal(data.raw_user_ids, [3, 7])
    np.testing.assert_array_equal(data.raw_item_ids, [10, 30])
    np.testing.assert_array_equal(data.user_ids, [1, 0, 1])
    np.testing.assert_array_equal(data.item_ids, [1, 0, 0])
    np.testing.assert_allclose(data.ratings, [5.0, 2.0, 4.0])
    np.testing.assert_array_equal(data.timestamps, [300, 100, 200])
    # User 7's history is time ordered: item 10 (t=200) before item 30 (t=300).
    np.testing.assert_array_equal(data.sequences()[1], [0, 1])


def test_movielens_ratings_dat(write_file):
    path = write_file("ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    data = readers.read_movielens_dat(path)
    assert data.name == "ml-1m"
    assert raw_pairs(data) == [(1, 1193), (1, 661)]
    np.testing.assert_allclose(data.ratings, [5.0, 3.0])
    np.testing.assert_array_equal(data.timestamps, [978300760, 978302109])


def test_movielens_interactions_dat_has_no_ratings(write_file):
    path = write_file("interactions.dat", "1::1193\n2::661\n1::661\n")
    data = readers.read_movielens_dat(path)
    assert data.ratings is None and data.timestamps is None
    assert raw_pairs(data) == [(1, 1193), (2, 661), (1, 661)]
    # Without timestamps, `sequences()` lists file order (which `make_split`
    # does not take as time order: see test_datasets).
    np.testing.assert_array_equal(data.raw_item_ids[data.sequences()[0]], [1193, 661])


def test_movielens_csv_skips_the_header(write_file):
    path = write_file(
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n",
    )
    data = readers.read_movielens_csv(path)
    assert data.name == "ml-20m" and len(data) == 2
    assert raw_pairs(data) == [(1, 2), (1, 29)]
    np.testing.assert_allclose(data.ratings, [3.5, 4.0])
    # Sorted by time: movie 29 first.
    np.testing.assert_array_equal(data.raw_item_ids[data.sequences()[0]], [29, 2])


def test_movielens_csv_without_a_header_keeps_the_first_row(write_file):
    # A converted ratings.csv with no header: line 1 is data, not a header.
    path = write_file("ratings.csv", "1,10,4.0,100\n1,20,3.0,200\n2,10,5.0,300\n")
    data = readers.read_movielens_csv(path)
    assert len(data) == 3
    assert raw_pairs(data) == [(1, 10), (1, 20), (2, 10)]
    np.testing.assert_array_equal(data.timestamps, [100, 200, 300])


def test_movielens_csv_bad_first_data_line_is_not_taken_for_a_header(write_file):
    # Line 1 has numbers, so it is data: its bad field is reported.
    path = write_file("ratings.csv", "1,10,4.0,later\n1,20,3.0,200\n")
    with pytest.raises(DataFormatError, match="must be an integer") as info:
        readers.read_movielens_csv(path)
    assert f"{path}:1" in str(info.value)


@pytest.mark.parametrize(
    "header",
    [
        "userId,movieId,rating,timestamp",
        "\ufeffuserId,movieId,rating,timestamp",  # a UTF-8 byte order mark
        "USERID, movieid ,Rating,TimeStamp",
    ],
    ids=["plain", "bom", "case-and-spaces"],
)
def test_movielens_csv_header_spellings(write_file, header):
    path = write_file("ratings.csv", f"{header}\n1,2,3.5,100\n")
    data = readers.read_movielens_csv(path)
    assert raw_pairs(data) == [(1, 2)]


@pytest.mark.parametrize(
    "first, message",
    [
        ("a,b,c,d", "user must be an integer, got 'a'"),
        ("userId,movieId,rating,ts", "user must be an integer, got 'userId'"),
        ("userId,movieId,rating", "expected 4 to 4 fields"),
    ],
    ids=["letters", "other-names", "too-few-names"],
)
def test_movielens_csv_first_line_other_than_the_header_is_data(
    write_file, first, message
):
    # Was dropped as a header (no field is a number), losing a row silently.
    path = write_file("ratings.csv", f"{first}\n1,2,3.5,1112486027\n")
    with pytest.raises(DataFormatError, match=message) as info:
        readers.read_movielens_csv(path)
    assert str(info.value).startswith(f"{path}:1: ")
    assert "not the header 'userId,movieId,rating,timestamp'" in str(info.value)


def test_movielens_csv_with_only_a_header(write_file):
    path = write_file("ratings.csv", "userId,movieId,rating,timestamp\n")
    with pytest.raises(DataFormatError, match="header but no rows") as info:
        readers.read_movielens_csv(path)
    assert path in str(info.value)


@pytest.mark.parametrize(
    "text",
    ["0\t5\t5\t978\n2\t1\t3\t979\n", "0\t5\n2\t1\n"],
    ids=["train.rating", "pairs"],
)
def test_ncf_train_keeps_zero_based_ids(write_file, text):
    path = write_file("ml-1m.train.rating", text)
    data = readers.read_ncf_train(path)
    # Ids are kept as given (no remapping), sizes are max id + 1.
    np.testing.assert_array_equal(data.user_ids, [0, 2])
    np.testing.assert_array_equal(data.item_ids, [5, 1])
    assert (data.num_users, data.num_items) == (3, 6)
    assert data.raw_user_ids is None
    sized = readers.read_ncf_train(path, num_users=4, num_items=10)
    assert (sized.num_users, sized.num_items) == (4, 10)


def test_ncf_test_rating(write_file):
    path = write_file(
        "ml-1m.test.rating", "0\t25\t5\t978824351\n1\t133\t3\t978300174\n"
    )
    users, items = readers.read_ncf_test_rating(path)
    np.testing.assert_array_equal(users, [0, 1])
    np.testing.assert_array_equal(items, [25, 133])


def test_ncf_test_negative(write_file):
    path = write_file("ml-1m.test.negative", "(0,25)\t1\t2\t3\n(1,133)\t4\t5\t6\n")
    users, items, negatives = readers.read_ncf_test_negative(path)
    np.testing.assert_array_equal(users, [0, 1])
    np.testing.assert_array_equal(items, [25, 133])
    np.testing.assert_array_equal(negatives, [[1, 2, 3], [4, 5, 6]])
    assert negatives.dtype == np.int64


def test_user_item_pairs_file_order_is_time(write_file):
    path = write_file("Video.txt", "1 5\n2 5\n1 3\n1 9\n2 1\n")
    data = readers.read_user_item_pairs(path, "games")
    assert data.name == "games"
    np.testing.assert_array_equal(data.timestamps, np.arange(5))
    sequences = [data.raw_item_ids[s].tolist() for s in data.sequences()]
    assert sequences == [[5, 3, 9], [5, 1]]


def test_user_sequences_file(write_file):
    path = write_file("Beauty.txt", "10 4 2 8\n20 2\n30 8 4\n")
    data = readers.read_user_sequences(path, "beauty")
    assert (data.num_users, data.num_items, len(data)) == (3, 3, 6)
    np.testing.assert_array_equal(data.raw_user_ids, [10, 20, 30])
    sequences = [data.raw_item_ids[s].tolist() for s in data.sequences()]
    assert sequences == [[4, 2, 8], [2], [8, 4]]


def test_ngcf_split_with_an_empty_test_line(write_file):
    train_path = write_file("train.txt", "0 0 1 2\n1 3\n2 1 4\n")
    # User 1 has no test items: its line is just the user id.
    test_path = write_file("test.txt", "0 3\n1\n2 0 5\n")
    train, test = readers.read_ngcf_split(train_path, test_path, "gowalla")
    assert (train.num_users, train.num_items) == (3, 6)
    assert (test.num_users, test.num_items) == (3, 6)
    assert raw_pairs(train) == [(0, 0), (0, 1), (0, 2), (1, 3), (2, 1), (2, 4)]
    assert raw_pairs(test) == [(0, 3), (2, 0), (2, 5)]
    assert test.user_counts().tolist() == [1, 0, 2]


# --- bad input ---------------------------------------------------------------


def _read_ngcf_train(path):
    return readers.read_ngcf_split(path, path)


READERS = {
    "ml-100k": (readers.read_movielens_100k, "1\t2\t3\t4\n"),
    "ratings.dat": (readers.read_movielens_dat, "1::2::3::4\n"),
    "interactions.dat": (readers.read_movielens_dat, "1::2\n"),
    "ratings.csv": (
        readers.read_movielens_csv,
        "userId,movieId,rating,timestamp\n1,2,3,4\n",
    ),
    "ncf-train": (readers.read_ncf_train, "0\t1\t5\t9\n"),
    "ncf-test-rating": (readers.read_ncf_test_rating, "0\t1\t5\t9\n"),
    "ncf-test-negative": (readers.read_ncf_test_negative, "(0,1)\t2\t3\n"),
    "user-item": (readers.read_user_item_pairs, "1 2\n"),
    "user-sequences": (readers.read_user_sequences, "1 2 3\n"),
    "ngcf": (_read_ngcf_train, "0 1 2\n"),
}

# A bad line for each reader: (text of the line, what the message says).
MALFORMED = {
    "ml-100k": "1\t2\t3\n",
    "ratings.dat": "1::2::3::4::5\n",
    "interactions.dat": "1\n",
    "ratings.csv": "1,2,3,4,5\n",
    "ncf-train": "0 1 2 3 4\n",
    "ncf-test-rating": "0\n",
    "ncf-test-negative": "0,1\t2\t3\n",
    "user-item": "1 2 3\n",
}
NON_INTEGER = {
    "ml-100k": "1\tx2\t3\t4\n",
    "ratings.dat": "u1::2::3::4\n",
    "interactions.dat": "1::2.5\n",
    "ratings.csv": "1,2,3,four\n",
    "ncf-train": "0\tone\t5\t9\n",
    "ncf-test-rating": "zero\t1\t5\t9\n",
    "ncf-test-negative": "(0,1)\t2\tthree\n",
    "user-item": "1 b\n",
    "user-sequences": "9 2 c\n",
    "ngcf": "9 1 x\n",
}


def _bad_file(write_file, name, bad_line):
    """A file of `name`'s format whose physical line 4 is `bad_line`.

    Line 2 is blank, so the reported number must count blank lines.
    """
    _, good = READERS[name]
    header, row = (good.split("\n", 1)) if name == "ratings.csv" else ("", good)
    again = row.strip()
    if name in ("user-sequences", "ngcf"):  # one line per user: another user
        again = "7" + again[again.index(" ") :]
    lines = ([header] if header else [row.strip()]) + ["", again, bad_line]
    return write_file(f"{name}.txt", "\n".join(lines).rstrip("\n") + "\n")


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_wrong_field_count_names_path_and_line(write_file, name):
    path = _bad_file(write_file, name, MALFORMED[name])
    with pytest.raises(DataFormatError) as info:
        READERS[name][0](path)
    assert f"{path}:4" in str(info.value)


@pytest.mark.parametrize("name", sorted(NON_INTEGER))
def test_non_integer_id_names_path_and_line(write_file, name):
    path = _bad_file(write_file, name, NON_INTEGER[name])
    with pytest.raises(DataFormatError, match="must be an integer") as info:
        READERS[name][0](path)
    assert f"{path}:4" in str(info.value)


def test_non_numeric_rating_names_path_and_line(write_file):
    path = write_file("u.data", "1\t2\t3\t4\n1\t3\tgood\t5\n")
    with pytest.raises(DataFormatError, match="must be a number") as info:
        readers.read_movielens_100k(path)
    assert f"{path}:2" in str(info.value)


def test_ratings_dat_with_a_short_row_names_path_and_line(write_file):
    # `ratings.dat` rows have 4 fields, `interactions.dat` rows 2; a file that
    # mixes them is malformed at the first row that differs (here line 3).
    path = write_file("ratings.dat", "1::2::5::100\n1::3::4::101\n2::2::3\n")
    with pytest.raises(DataFormatError) as info:
        readers.read_movielens_dat(path)
    assert f"{path}:3" in str(info.value)


@pytest.mark.parametrize(
    "name, reader, text, message",
    [
        # The first row sets the width (3 fields), the second differs.
        (
            "ratings.dat",
            readers.read_movielens_dat,
            "1::2::3\n1::2::3::4\n",
            ":2: line 2 has 4 fields, line 1 has 3",
        ),
        # Blank lines are counted, a header is not a row.
        (
            "x.train.rating",
            readers.read_ncf_train,
            "\n0 1\n\n0 2 5\n",
            ":4: line 4 has 3 fields, line 2 has 2",
        ),
        (
            "ratings.csv",
            readers.read_movielens_csv,
            "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,3,4,5\n",
            ":3: expected 4 to 4 fields",
        ),
    ],
    ids=["first-row-differs", "blank-lines", "header"],
)
def test_rows_of_different_widths_name_both_lines(
    write_file, name, reader, text, message
):
    # Used to blame only the later line ("expected 3 fields like the rows
    # before"), though the odd one may be the first.
    path = write_file(name, text)
    with pytest.raises(DataFormatError, match=message) as info:
        reader(path)
    assert str(info.value).startswith(f"{path}:")


@pytest.mark.parametrize(
    "bad_file, text, message, line",
    [
        ("train", "0 1 2\n1 -1\n", "item id must be >= 0 .*got '-1'", 2),
        ("train", "0 1\n-1 2\n", "user id must be >= 0 .*got '-1'", 2),
        ("test", "0 1\n1 0 -3\n", "item id must be >= 0 .*got '-3'", 2),
        ("train", "0 1\n1 99999999999\n", "item id 99999999999 is out of range", 2),
        ("test", "2147483647 1\n", "user id 2147483647 is out of range", 1),
    ],
    ids=["negative-item", "negative-user", "test-file", "huge-item", "int32-max"],
)
def test_ngcf_ids_out_of_range_name_path_and_line(
    write_file, bad_file, text, message, line
):
    # A negative id raised without a file or line; a huge one was accepted
    # and made `num_items` 100000000000.
    good = {"train": "0 1 2\n", "test": "0 3\n"}
    paths = {
        name: write_file(f"{name}.txt", text if name == bad_file else good[name])
        for name in ("train", "test")
    }
    with pytest.raises(DataFormatError, match=message) as info:
        readers.read_ngcf_split(paths["train"], paths["test"])
    assert str(info.value).startswith(f"{paths[bad_file]}:{line}: ")


def test_ncf_negatives_of_different_widths(write_file):
    path = write_file("x.test.negative", "(0,1)\t2\t3\n(1,1)\t2\n")
    with pytest.raises(DataFormatError, match="expected 2 negatives") as info:
        readers.read_ncf_test_negative(path)
    assert f"{path}:2" in str(info.value)


@pytest.mark.parametrize("name", sorted(READERS))
@pytest.mark.parametrize("text", ["", "\n  \n\n"], ids=["empty", "blank"])
def test_empty_file(write_file, name, text):
    path = write_file(f"{name}.txt", text)
    with pytest.raises(DataFormatError, match="empty") as info:
        READERS[name][0](path)
    assert path in str(info.value)


@pytest.mark.parametrize("name", sorted(READERS))
def test_missing_file(tmp_path, name):
    path = str(tmp_path / "nowhere" / "file.txt")
    with pytest.raises(FileNotFoundError) as info:
        READERS[name][0](path)
    assert path in str(info.value)


@pytest.mark.parametrize("name", sorted(READERS))
def test_good_sample_files_parse(write_file, name):
    # Guards the bad-input tests: the same files without the bad line parse.
    reader, good = READERS[name]
    assert reader(write_file(f"{name}.txt", good)) is not None


@pytest.mark.parametrize(
    "text, message, line",
    [
        ("10,4,2005-09-06\n", "before any `movie:` line", 1),
        ("1:\n10,4\n", "expected `customer,rating,date`", 2),
        ("1:\n10,4,06/09/2005\n", "date must be YYYY-MM-DD", 2),
        ("x:\n10,4,2005-09-06\n", "movie id must be an integer", 1),
        ("1:\nten,4,2005-09-06\n", "customer id must be an integer", 2),
    ],
)
def test_netflix_errors_name_the_file_and_line(write_file, text, message, line):
    path = write_file("combined_data_1.txt", text)
    with pytest.raises(readers.DataFormatError, match=message) as info:
        readers.read_netflix([path])
    assert f"{path}:{line}" in str(info.value)


@pytest.mark.parametrize(
    "date", ["20050906", "2005-W36-2", "2005-9-6", "2005-02-30", " 2005-09-06"]
)
def test_netflix_dates_must_be_yyyy_mm_dd(write_file, date):
    # `date.fromisoformat` (Python 3.11) also takes 20050906 and 2005-W36-2.
    path = write_file("combined_data_1.txt", f"1:\n10,4,2005-09-06\n11,3,{date}\n")
    with pytest.raises(DataFormatError, match="date must be YYYY-MM-DD") as info:
        readers.read_netflix([path])
    assert str(info.value).startswith(f"{path}:3: ")


def test_netflix_dates_become_days_since_1970(write_file):
    path = write_file(
        "combined_data_1.txt",
        "1:\n10,4,2005-09-06\n11,3,1970-01-02\n2:\n10,5,2005-09-06\n",
    )
    data = readers.read_netflix([path])
    np.testing.assert_array_equal(data.timestamps, [13032, 1, 13032])
    assert raw_pairs(data) == [(10, 1), (11, 1), (10, 2)]

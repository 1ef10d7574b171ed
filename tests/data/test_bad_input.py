"""Data that would split or read into a silently wrong answer is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from keras_rec.data import DataFormatError, Dataset, Interactions, make_split
from keras_rec.data.datasets import load_dataset
from keras_rec.data.pipelines import (
    pointwise_dataset,
    pointwise_steps,
    sequence_dataset,
)
from keras_rec.data.readers import read_delimited, read_user_sequences
from keras_rec.data.splits import leave_one_out, random_holdout, strong_generalization

pytestmark = pytest.mark.usefixtures("no_data_dir_env")

NCF_TRAIN = "0\t0\t5\t1\n0\t1\t4\t2\n1\t2\t3\t3\n1\t0\t4\t4\n"


def _ncf(write_file, rating: str, negative: str) -> str:
    write_file("ncf-ml-1m/ml-1m.train.rating", NCF_TRAIN)
    write_file("ncf-ml-1m/ml-1m.test.rating", rating)
    path = write_file("ncf-ml-1m/ml-1m.test.negative", negative)
    return str(path).rsplit("/ncf-ml-1m/", 1)[0]


@pytest.mark.parametrize(
    "rating, negative, message",
    [
        ("0\t3\t5\t9\n-1\t4\t4\t9\n", "(0,3)\t2\n(-1,4)\t1\n", "test user id is neg"),
        ("0\t3\t5\t9\n1\t4\t4\t9\n", "(0,3)\t2\n(1,4)\t-1\n", "negative id is neg"),
        ("0\t3\t5\t9\n0\t4\t4\t9\n", "(0,3)\t2\n(0,4)\t1\n", "user 0 has 2 test rows"),
        ("0\t3\t5\t9\n7\t4\t4\t9\n", "(0,3)\t2\n(7,4)\t1\n", "user 7 has no training"),
        (
            "0\t1\t5\t9\n1\t4\t4\t9\n",
            "(0,1)\t2\n(1,4)\t3\n",
            "item 1 of user 0 is also",
        ),
        (
            "0\t3\t5\t9\n1\t4\t4\t9\n",
            "(0,3)\t2\n(1,4)\t0\n",
            "negative 0 of user 1 is one of the user's training items",
        ),
    ],
)
def test_ncf_test_rows_are_checked(write_file, rating, negative, message):
    # Each used to load: -1 read the last user's history, an unknown user got
    # an empty one, a repeated user was evaluated twice, a leaked item scored.
    data_dir = _ncf(write_file, rating, negative)
    with pytest.raises(DataFormatError, match=message):
        load_dataset("ncf-ml-1m", data_dir)


def test_ncf_protocols_use_the_test_rows(write_file, monkeypatch):
    data_dir = _ncf(write_file, "0\t3\t5\t9\n1\t4\t4\t9\n", "(0,3)\t2\n(1,4)\t1\n")
    dataset = load_dataset("ncf-ml-1m", data_dir)
    with pytest.raises(ValueError, match="ships leave-one-out test rows"):
        make_split(dataset, "holdout_full")
    # strong generalization merges them with the training rows (it ignored
    # them): what it splits holds all 6 interactions.
    seen = []
    monkeypatch.setattr(
        "keras_rec.data.splits.strong_generalization",
        lambda data, *args, **kwargs: seen.append(data),
    )
    make_split(dataset, "strong_generalization", num_heldout_users=1)
    assert len(seen[0]) == 6
    merged = seen[0]
    np.testing.assert_array_equal(merged.user_ids[-2:], [0, 1])
    np.testing.assert_array_equal(merged.item_ids[-2:], [3, 4])


@pytest.mark.parametrize(
    "line, message",
    [
        ("1_0\t5\t4\t1\n", "user must be an integer, got '1_0'"),
        ("1\t5\tnan\t1\n", "rating must be a finite number"),
        ("1\t5\tinf\t1\n", "rating must be a finite number"),
        ("1\t5\t1_0\t1\n", "rating must be a number"),
        ("1\t12345678901234567890\t4\t1\n", "item 12345678901234567890 does not fit"),
    ],
)
def test_malformed_fields_are_named(write_file, line, message):
    path = write_file("r.tsv", "1\t2\t3\t4\n" + line)
    with pytest.raises(DataFormatError, match=rf"r\.tsv:2: {message}"):
        read_delimited(path, "\t", ("user", "item", "rating", "timestamp"))


def test_non_finite_ratings_are_refused():
    with pytest.raises(ValueError, match="1 are NaN or inf"):
        Interactions([0, 1], [0, 1], 2, 2, ratings=[4.0, np.nan])
    with pytest.raises(ValueError, match="`num_users` must be >= 0"):
        Interactions([], [], -3, 2)


def test_a_user_with_two_lines_is_refused(write_file):
    # Was merged into one sequence.
    path = write_file("Beauty.txt", "1 3 4\n2 4\n1 5 6\n")
    with pytest.raises(DataFormatError, match=r"Beauty\.txt:3: user 1 already has"):
        read_user_sequences(path)


def test_an_ncf_negative_line_without_negatives_says_so(write_file):
    data_dir = _ncf(write_file, "0\t3\t5\t9\n1\t4\t4\t9\n", "(0,3)\t2\n(1,4)\n")
    with pytest.raises(DataFormatError, match="negative:2: the line has no negatives"):
        load_dataset("ncf-ml-1m", data_dir)


def _repeating() -> Interactions:
    # User 0 picks item 0 again last: it would be the test item and a
    # training item at once. Five distinct items each, so that every split
    # (strong_generalization evaluates users with 5 or more) has a user to
    # evaluate once the repeat is gone (it keeps only items training users
    # have, so both users have the same five).
    users = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    items = [0, 1, 2, 3, 4, 0, 4, 3, 2, 1, 0]
    return Interactions(users, items, 2, 5, timestamps=np.arange(11), name="rep")


@pytest.mark.parametrize(
    "split",
    [
        lambda data: leave_one_out(data),
        lambda data: random_holdout(data),
        lambda data: strong_generalization(data, 0, 1),
    ],
    ids=["leave_one_out", "random_holdout", "strong_generalization"],
)
def test_repeated_pairs_are_refused_until_deduplicated(split):
    data = _repeating()
    assert data.repeated_pairs() == 1
    message = (
        r"1 rows repeat a .user, item. pair .* \(the first, row 5: user 0, item 0\)"
    )
    with pytest.raises(ValueError, match=message):
        split(data)
    unique = data.deduplicated()
    assert unique.repeated_pairs() == 0 and len(unique) == 10
    # With the file's raw ids known, the message gives them too.
    raw = dataclasses.replace(
        data, raw_user_ids=np.array([10, 11]), raw_item_ids=np.arange(100, 105)
    )
    with pytest.raises(ValueError, match=r"row 5: user 0, item 0 \(raw 10, 100\)"):
        split(raw)
    # The earliest copy is kept: user 0's history is 0, 1, 2, 3, 4.
    np.testing.assert_array_equal(unique.sequences()[0], [0, 1, 2, 3, 4])
    split(unique)


def test_split_arguments_are_checked():
    data = _repeating().deduplicated()
    with pytest.raises(ValueError, match="`min_interactions` must be at least 3"):
        leave_one_out(data, min_interactions=1)
    with pytest.raises(ValueError, match="`min_interactions` must be at least 2"):
        leave_one_out(data, validation=False, min_interactions=0)
    with pytest.raises(ValueError, match="`fold_in_fraction` must be in"):
        strong_generalization(data, 0, 1, fold_in_fraction=1.5)
    with pytest.raises(ValueError, match="`min_user_interactions` must be"):
        make_split(Dataset("rep", data), "holdout_full", min_user_interactions=-3)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda d: pointwise_steps(d, batch_size=-5), "`batch_size` must be"),
        (lambda d: pointwise_dataset(d, num_negatives=-1), "`num_negatives` must"),
        (lambda d: sequence_dataset(d, 3, -1, bucket_by_length=True), "batch_size"),
        (lambda d: sequence_dataset(d, 3, 0, bucket_by_length=True), "batch_size"),
        (lambda d: sequence_dataset(d, maxlen=0), "`maxlen` must be"),
        (lambda d: pointwise_dataset(d.subset(np.zeros(len(d), bool))), "no inter"),
    ],
)
def test_pipeline_arguments_are_checked(build, message):
    with pytest.raises(ValueError, match=message):
        build(_repeating().deduplicated())

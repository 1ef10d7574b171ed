"""`load_dataset` on tiny files in each registered layout, and `make_split`."""

from __future__ import annotations

import dataclasses
import os
import socket

import numpy as np
import pytest

from keras_rec.data import (
    DATA_DIR_ENV,
    DataFormatError,
    Dataset,
    Interactions,
    load_dataset,
    make_split,
    make_synthetic,
    resolve_data_dir,
)
from keras_rec.data.datasets import LOADERS

pytestmark = pytest.mark.usefixtures("no_data_dir_env")

ML_100K = "".join(
    f"{u}\t{i}\t{r}\t{t}\n"
    for u, i, r, t in [
        (1, 10, 5, 1), (1, 20, 3, 2), (1, 30, 4, 3), (1, 40, 2, 4),
        (2, 20, 4, 5), (2, 30, 5, 6), (2, 50, 1, 7), (2, 10, 3, 8),
        (3, 10, 4, 9), (3, 40, 5, 10), (3, 60, 4, 11),
    ]
)  # fmt: skip

NCF_FILES = {
    "ncf-ml-1m/ml-1m.train.rating": "0\t0\t5\t1\n0\t1\t4\t2\n1\t2\t3\t3\n1\t0\t4\t4\n",
    "ncf-ml-1m/ml-1m.test.rating": "0\t3\t5\t9\n1\t4\t4\t9\n",
    "ncf-ml-1m/ml-1m.test.negative": "(0,3)\t2\t4\t5\n(1,4)\t1\t3\t5\n",
}

# For each name: the files to write (relative path -> text), and the
# expected (users, items, interactions) of `Dataset.interactions`.
LAYOUTS = {
    "ml-100k": ({"ml-100k/u.data": ML_100K}, (3, 6, 11)),
    "ml-1m": ({"ml-1m/ratings.dat": "1::5::3::7\n2::6::4::8\n1::6::5::9\n"}, (2, 2, 3)),
    "ncf-ml-1m": (NCF_FILES, (2, 6, 4)),
    "games": ({"sasrec/Video.txt": "1 1\n1 2\n2 2\n2 3\n1 4\n"}, (2, 4, 5)),
    "beauty": ({"seq-s3rec-iclrec/Beauty.txt": "1 3 4 5\n2 4 6\n"}, (2, 4, 5)),
    "gowalla": (
        {
            "gowalla/train.txt": "0 0 1\n1 1 2\n2 0\n",
            "gowalla/test.txt": "0 2\n1\n2 3\n",
        },
        (3, 4, 5),
    ),
    "yelp2018": (
        {"yelp2018/train.txt": "0 0\n1 1\n", "yelp2018/test.txt": "0 1\n"},
        (2, 2, 2),
    ),
    "amazon-book": (
        {"amazon-book/train.txt": "0 1\n1 0\n", "amazon-book/test.txt": "1 1\n"},
        (2, 2, 2),
    ),
    "ml-20m": (
        {"ml-20m/ratings.csv": "userId,movieId,rating,timestamp\n1,2,3.5,4\n5,2,4,6\n"},
        (2, 1, 2),
    ),
    "ml-25m": (
        {"ml-25m/ratings.csv": "userId,movieId,rating,timestamp\n1,2,3.5,4\n"},
        (1, 1, 1),
    ),
    "netflix": (
        {
            "netflix/combined_data_1.txt": "1:\n10,4,2005-09-06\n11,3,2005-05-13\n",
            "netflix/combined_data_2.txt": "2:\n10,5,2004-01-01\n",
            "netflix/combined_data_3.txt": "3:\n12,1,2003-03-03\n",
            "netflix/combined_data_4.txt": "4:\n12,4,2003-03-04\n",
        },
        (3, 4, 5),
    ),
}


def write_layout(tmp_path, files: dict) -> str:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


def test_every_file_dataset_has_a_layout_test():
    assert set(LOADERS) - {"synthetic"} == set(LAYOUTS)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_load_each_dataset(tmp_path, name):
    files, (num_users, num_items, rows) = LAYOUTS[name]
    dataset = load_dataset(name, write_layout(tmp_path, files))
    data = dataset.interactions
    assert dataset.name == name
    assert (data.num_users, data.num_items, len(data)) == (num_users, num_items, rows)
    assert sorted(dataset.files) == sorted(str(tmp_path / f) for f in files)
    assert len(dataset.checksum()) == 64


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_missing_files_are_named(tmp_path, name):
    files, _ = LAYOUTS[name]
    # Write all but the last file: the error names it and the directory.
    *present, (missing, _) = files.items()
    data_dir = write_layout(tmp_path, dict(present))
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, data_dir)
    message = str(info.value)
    assert repr(missing) in message or missing in message
    assert os.path.abspath(data_dir) in message
    assert DATA_DIR_ENV in message


@pytest.mark.parametrize(
    "name, alternatives",
    [
        ("ml-1m", ["ml-1m/ratings.dat", "ml-1m/interactions.dat"]),
        ("ncf-ml-1m", ["ncf-ml-1m/ml-1m.train.rating", "ml-1m/ncf-ml-1m.train.pairs"]),
    ],
)
def test_missing_alternative_files_are_all_named(tmp_path, name, alternatives):
    # Either file will do, so a user missing both must be told about both
    # (the shared data ships the second of each pair).
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, str(tmp_path))
    for relative in alternatives:
        assert relative in str(info.value)


def test_ml_1m_reads_either_file(tmp_path):
    pairs = write_layout(tmp_path / "a", {"ml-1m/interactions.dat": "1::5\n2::6\n"})
    dataset = load_dataset("ml-1m", pairs)
    assert dataset.files[0].endswith("interactions.dat")
    assert dataset.interactions.ratings is None
    both = write_layout(
        tmp_path / "b",
        {"ml-1m/interactions.dat": "1::5\n", "ml-1m/ratings.dat": "1::5::3::7\n"},
    )
    assert load_dataset("ml-1m", both).files[0].endswith("ratings.dat")


def test_gowalla_keeps_the_test_file(tmp_path):
    files, _ = LAYOUTS["gowalla"]
    dataset = load_dataset("gowalla", write_layout(tmp_path, files))
    test = dataset.test
    assert (test.num_users, test.num_items) == (3, 4)
    assert test.user_counts().tolist() == [1, 0, 1]


def test_ncf_dataset(tmp_path):
    dataset = load_dataset("ncf-ml-1m", write_layout(tmp_path, NCF_FILES))
    users, items = dataset.test_items
    np.testing.assert_array_equal(users, [0, 1])
    np.testing.assert_array_equal(items, [3, 4])
    np.testing.assert_array_equal(dataset.test_negatives, [[2, 4, 5], [1, 3, 5]])
    assert dataset.interactions.name == "ncf-ml-1m"


def test_ncf_dataset_with_the_pair_file(tmp_path):
    files = dict(NCF_FILES)
    files["ml-1m/ncf-ml-1m.train.pairs"] = "0\t0\n0\t1\n1\t2\n"
    del files["ncf-ml-1m/ml-1m.train.rating"]
    dataset = load_dataset("ncf-ml-1m", write_layout(tmp_path, files))
    assert dataset.files[0].endswith("ncf-ml-1m.train.pairs")
    assert len(dataset.interactions) == 3


def test_ncf_dataset_item_ids_beyond_the_test_files(tmp_path):
    # The training file may hold items (and users) that no test row or
    # negative mentions: the vocabulary must cover the training file too.
    files = dict(NCF_FILES)
    files["ncf-ml-1m/ml-1m.train.rating"] += "2\t9\t4\t5\n"
    dataset = load_dataset("ncf-ml-1m", write_layout(tmp_path, files))
    assert dataset.interactions.num_items == 10
    assert dataset.interactions.num_users == 3


def test_ncf_dataset_files_that_disagree(tmp_path):
    files = dict(NCF_FILES)
    files["ncf-ml-1m/ml-1m.test.rating"] = "0\t3\t5\t9\n1\t5\t4\t9\n"
    with pytest.raises(DataFormatError, match="disagree"):
        load_dataset("ncf-ml-1m", write_layout(tmp_path, files))


def test_unknown_name():
    with pytest.raises(ValueError, match="Unknown dataset 'ml-2m'"):
        load_dataset("ml-2m", "anywhere")


def test_synthetic_needs_no_files(tmp_path):
    dataset = load_dataset("synthetic", str(tmp_path / "empty"))
    assert dataset.files == ()
    assert dataset.checksum() == dataset.interactions.checksum()


def test_checksum_follows_the_files(tmp_path):
    files, _ = LAYOUTS["gowalla"]
    data_dir = write_layout(tmp_path, files)
    before = load_dataset("gowalla", data_dir).checksum()
    assert load_dataset("gowalla", data_dir).checksum() == before
    (tmp_path / "gowalla/test.txt").write_text("0 2\n1\n2 1\n")
    assert load_dataset("gowalla", data_dir).checksum() != before


def test_data_dir_from_the_environment(tmp_path, monkeypatch):
    assert resolve_data_dir(None) == "data"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert resolve_data_dir(None) == str(tmp_path)
    assert resolve_data_dir("given") == "given"
    write_layout(tmp_path, LAYOUTS["ml-100k"][0])
    assert len(load_dataset("ml-100k").interactions) == 11


def _no_network(*args, **kwargs):
    raise AssertionError("the network was used")


def test_tfds_without_prepared_data(tmp_path, monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    with pytest.raises(FileNotFoundError, match="not prepared") as info:
        load_dataset("tfds:movielens/100k-ratings", str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_tfds_records_become_interactions(monkeypatch):
    # A prepared TFDS builder, faked: MovieLens' features as TFDS gives them
    # (byte-string ids, float ratings, int timestamps), in two batches.
    import tensorflow as tf
    import tensorflow_datasets as tfds

    records = {
        "user_id": [b"7", b"3", b"7"],
        "movie_id": [b"10", b"10", b"42"],
        "user_rating": np.array([4.0, 2.0, 5.0], np.float32),
        "timestamp": np.array([30, 10, 20], np.int64),
    }

    class Prepared:
        data_dir = "fake"

        def is_prepared(self):
            return True

        def as_dataset(self, split, batch_size):
            assert split == "train"
            return tf.data.Dataset.from_tensor_slices(records).batch(2)

    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: Prepared())
    data = load_dataset("tfds:movielens/100k-ratings", "anywhere").interactions
    assert data.name == "movielens/100k-ratings"
    assert (data.num_users, data.num_items, len(data)) == (2, 2, 3)
    raw_users = [data.raw_user_ids[u] for u in data.user_ids]
    raw_items = [data.raw_item_ids[i] for i in data.item_ids]
    assert raw_users == [b"7", b"3", b"7"] and raw_items == [b"10", b"10", b"42"]
    np.testing.assert_array_equal(data.ratings, [4.0, 2.0, 5.0])
    np.testing.assert_array_equal(data.timestamps, [30, 10, 20])


def test_tfds_only_movielens_ratings():
    with pytest.raises(ValueError, match="movielens/\\*-ratings"):
        load_dataset("tfds:mnist", "anywhere")


# --- make_split --------------------------------------------------------------


@pytest.fixture
def ml_100k(tmp_path):
    return load_dataset("ml-100k", write_layout(tmp_path, LAYOUTS["ml-100k"][0]))


def test_make_split_unknown_protocol(ml_100k):
    with pytest.raises(ValueError, match="Unknown protocol"):
        make_split(ml_100k, "loo_random")


def test_make_split_ncf_uses_the_fixed_negatives(tmp_path):
    dataset = load_dataset("ncf-ml-1m", write_layout(tmp_path, NCF_FILES))
    for protocol in ("loo_sampled", "loo_full"):
        split = make_split(dataset, protocol, validation=False)
        assert split.protocol == protocol
        assert split.train is dataset.interactions
        assert split.validation is None
        np.testing.assert_array_equal(split.test.negatives, dataset.test_negatives)
        np.testing.assert_array_equal(split.test.targets.indices, [3, 4])
        assert [h.tolist() for h in split.test.histories] == [[0, 1], [2, 0]]


def test_make_split_ncf_holds_out_one_random_training_item(tmp_path):
    dataset = load_dataset("ncf-ml-1m", write_layout(tmp_path, NCF_FILES))
    split = make_split(dataset, "loo_sampled", seed=4)
    train_pairs = set(
        zip(split.train.user_ids.tolist(), split.train.item_ids.tolist(), strict=True)
    )
    all_pairs = set(
        zip(
            dataset.interactions.user_ids.tolist(),
            dataset.interactions.item_ids.tolist(),
            strict=True,
        )
    )
    valid = split.validation
    held_out = {
        (int(u), int(valid.targets[r].indices[0])) for r, u in enumerate(valid.users)
    }
    assert valid.users.tolist() == [0, 1]
    assert held_out | train_pairs == all_pairs and not held_out & train_pairs
    # Validation negatives: as many as the test's, never a known item.
    assert valid.negatives.shape == dataset.test_negatives.shape
    for row, user in enumerate(valid.users):
        known = set(dataset.interactions.sequences()[user]) | {[3, 4][row]}
        assert not known & set(valid.negatives[row].tolist())
        assert [h.tolist() for h in split.test.histories][row] == list(
            dataset.interactions.sequences()[user]
        )
    # The test set is the files' own, and the split follows the seed.
    np.testing.assert_array_equal(split.test.negatives, dataset.test_negatives)
    again = make_split(dataset, "loo_sampled", seed=4)
    np.testing.assert_array_equal(again.validation.negatives, valid.negatives)
    np.testing.assert_array_equal(again.train.item_ids, split.train.item_ids)


def test_make_split_loo_sampled_draws_seeded_negatives(ml_100k):
    split = make_split(ml_100k, "loo_sampled", seed=3, num_negatives=2)
    again = make_split(ml_100k, "loo_sampled", seed=3, num_negatives=2)
    for part in (split.test, split.validation):
        assert part.negatives.shape == (3, 2)
        seen = (part.history_matrix + part.targets).toarray() > 0
        assert not np.take_along_axis(seen, part.negatives, axis=1).any()
    np.testing.assert_array_equal(split.test.negatives, again.test.negatives)
    assert make_split(ml_100k, "loo_full").test.negatives is None


def test_loo_sampled_negatives_are_never_items_the_user_interacted_with():
    # The validation history stops before the test item: it is excluded
    # from the validation negatives explicitly.
    data = make_synthetic(num_users=40, num_items=60, mean_length=10, seed=0)
    split = make_split(Dataset("mine", data), "loo_sampled", seed=0, num_negatives=30)
    items = {u: set(seq.tolist()) for u, seq in enumerate(data.sequences())}
    for part in (split.test, split.validation):
        for user, negatives in zip(part.users, part.negatives, strict=True):
            assert not items[user] & set(negatives.tolist())


def test_make_split_min_rating(ml_100k):
    split = make_split(ml_100k, "loo_full", min_rating=4, validation=False)
    # 7 ratings >= 4 from 3 users; each user's latest one is its test item.
    assert len(split.train) + len(split.test) == 7


def test_make_split_holdout(tmp_path, ml_100k):
    files, _ = LAYOUTS["gowalla"]
    gowalla = load_dataset("gowalla", write_layout(tmp_path / "g", files))
    split = make_split(gowalla, "holdout_full")
    assert split.protocol == "holdout_full"
    np.testing.assert_array_equal(split.test.users, [0, 2])
    random = make_split(ml_100k, "holdout_full", seed=0)
    assert len(random.train) + random.test.targets.nnz == 11


def test_make_split_strong_generalization_merges_train_and_test(tmp_path):
    train = "".join(
        f"{u} " + " ".join(str(i) for i in range(u % 5, 10)) + "\n" for u in range(20)
    )
    test = "".join(f"{u} {10 + u % 3}\n" for u in range(20))
    files = {"gowalla/train.txt": train, "gowalla/test.txt": test}
    dataset = load_dataset("gowalla", write_layout(tmp_path, files))
    split = make_split(dataset, "strong_generalization", num_heldout_users=3)
    assert (len(split.validation), len(split.test)) == (3, 3)
    held_rows = sum(len(h) for h in split.test.histories) + split.test.targets.nnz
    held_rows += sum(len(h) for h in split.validation.histories)
    held_rows += split.validation.targets.nnz
    total = len(dataset.interactions) + len(dataset.test)
    assert len(split.train) + held_rows == total


def test_netflix_reads_the_original_training_set_folder(tmp_path):
    data_dir = write_layout(
        tmp_path,
        {
            "netflix/training_set/mv_0000001.txt": "1:\n6,5,2005-01-02\n7,2,2005-01-03\n",
            "netflix/training_set/mv_0000002.txt": "2:\n6,4,2005-01-04\n",
        },
    )
    data = load_dataset("netflix", data_dir).interactions
    assert (data.num_users, data.num_items, len(data)) == (2, 2, 3)
    assert sorted(data.ratings.tolist()) == [2.0, 4.0, 5.0]
    # Dates are days since 1970-01-01.
    assert data.timestamps.min() == 12785


def test_make_split_keeps_users_with_enough_high_ratings(tmp_path):
    # Mult-VAE's preprocessing: ratings > 3.5, then users with >= 2 of them.
    # Kept users have 5 or more, so whichever is held out can be evaluated.
    kept_rows = [(1, i, 4 + i % 2) for i in range(1, 6)]  # user 1: five kept
    kept_rows += [(3, i, 4.5) for i in range(2, 7)]  # user 3: five kept
    kept_rows += [(4, i, 4) for i in range(1, 7)]  # user 4: six kept
    dropped_rows = [(1, 6, 1), (2, 1, 5), (2, 2, 2), (2, 3, 3)]  # user 2: one kept
    rows = "".join(f"{u},{i},{r},{i}\n" for u, i, r in kept_rows + dropped_rows)
    data_dir = write_layout(
        tmp_path, {"ml-20m/ratings.csv": "userId,movieId,rating,timestamp\n" + rows}
    )
    dataset = load_dataset("ml-20m", data_dir)
    split = make_split(
        dataset,
        "strong_generalization",
        num_heldout_users=1,
        min_rating=4.0,
        min_user_interactions=2,
    )
    kept = dataset.interactions.filter(min_rating=4.0, min_user_interactions=2)
    assert (kept.num_users, len(kept)) == (3, 16)
    assert split.train.num_users == 3


def test_make_split_drops_rare_items_before_leave_one_out(tmp_path):
    # SASRec's ML-1M entry: items with fewer than 2 (here) ratings go
    # before the split, and the ids are renumbered over the rest.
    rows = [(1, 5, 1), (1, 6, 2), (1, 7, 3), (2, 5, 1), (2, 6, 2), (2, 8, 3)]
    rows += [(3, 6, 1), (3, 5, 2)]
    text = "".join(f"{u}::{i}::4::{t}\n" for u, i, t in rows)
    dataset = load_dataset("ml-1m", write_layout(tmp_path, {"ml-1m/ratings.dat": text}))
    split = make_split(
        dataset, "loo_full", min_user_interactions=2, min_item_interactions=2
    )
    assert split.train.num_items == 2  # items 7 and 8 (one rating each) dropped
    np.testing.assert_array_equal(split.train.raw_item_ids, [5, 6])
    with pytest.raises(ValueError, match="`min_item_interactions` must be"):
        make_split(dataset, "loo_full", min_item_interactions=0)


# --- make_split refuses what it cannot do right --------------------------------


def _pairs(interactions, users, items):
    """(raw user, raw item) pairs of ids in `interactions`' id space."""
    raw_users = interactions.raw_user_ids
    raw_items = interactions.raw_item_ids
    return {
        (int(raw_users[u]), int(raw_items[i]))
        for u, i in zip(users, items, strict=True)
    }


@pytest.mark.parametrize("protocol", ["loo_sampled", "loo_full"])
def test_loo_refuses_ml1m_interactions_dat_without_timestamps(tmp_path, protocol):
    # interactions.dat keeps ratings.dat's row order, which is not time
    # order: user 1's latest rating (item 10, t=100 below) is not its last row.
    data_dir = write_layout(
        tmp_path, {"ml-1m/interactions.dat": "1::30\n1::10\n1::20\n"}
    )
    dataset = load_dataset("ml-1m", data_dir)
    with pytest.raises(ValueError, match="no timestamps") as info:
        make_split(dataset, protocol, validation=False)
    message = str(info.value)
    assert "'ml-1m'" in message and "interactions.dat" in message
    assert "not (known to be) time order" in message
    assert "ml-1m/ratings.dat" in message
    # Protocols that need no time order still split it.
    assert make_split(dataset, "holdout_full").test.targets.nnz >= 1


def test_loo_on_ml1m_ratings_dat_holds_out_the_latest_rating(tmp_path):
    text = "1::30::5::300\n1::10::5::100\n1::20::5::200\n"
    dataset = load_dataset("ml-1m", write_layout(tmp_path, {"ml-1m/ratings.dat": text}))
    split = make_split(dataset, "loo_full", validation=False)
    raw = dataset.interactions.raw_item_ids
    assert raw[split.test.targets[0].indices].tolist() == [30]


@pytest.mark.parametrize("count", [0, -1, 100.0, True])
def test_make_split_num_negatives_must_be_a_positive_integer(ml_100k, count):
    with pytest.raises(ValueError, match="`num_negatives` must be an integer >= 1"):
        make_split(ml_100k, "loo_sampled", num_negatives=count)


def test_loo_refuses_in_memory_data_without_timestamps():
    data = Interactions([0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2], 2, 3)
    with pytest.raises(ValueError, match="'mine' has no timestamps"):
        make_split(Dataset("mine", data), "loo_sampled")
    # Declaring the file order as time order (a running index) is accepted.
    timed = dataclasses.replace(data, timestamps=np.arange(6))
    split = make_split(Dataset("mine", timed), "loo_full", validation=False)
    assert [r.indices.tolist() for r in split.test.targets] == [[2], [2]]


@pytest.mark.parametrize("protocol", ["loo_sampled", "loo_full"])
def test_loo_refuses_a_dataset_that_ships_a_test_file(tmp_path, protocol):
    files, _ = LAYOUTS["gowalla"]
    gowalla = load_dataset("gowalla", write_layout(tmp_path, files))
    with pytest.raises(ValueError, match="ships a test file") as info:
        make_split(gowalla, protocol)
    assert "'holdout_full'" in str(info.value) and "test.txt" in str(info.value)


@pytest.mark.parametrize("protocol", ["holdout_full", "loo_sampled", "loo_full"])
@pytest.mark.parametrize("filters", [{"min_user_interactions": 2}, {"min_rating": 4.0}])
def test_filters_with_a_shipped_test_file_raise(tmp_path, protocol, filters):
    files, _ = LAYOUTS["gowalla"]
    gowalla = load_dataset("gowalla", write_layout(tmp_path, files))
    # (loo on a test-file dataset raises anyway; it must not get further.)
    with pytest.raises(ValueError, match="renumber|ships a test file"):
        make_split(gowalla, protocol, **filters)


@pytest.mark.parametrize("protocol", ["loo_sampled", "loo_full"])
def test_filters_with_ncf_test_rows_raise(tmp_path, protocol):
    # Filtering renumbers the training ids; the NCF test rows and negatives
    # stay in the old id space, so targets would point at other items.
    dataset = load_dataset("ncf-ml-1m", write_layout(tmp_path, NCF_FILES))
    with pytest.raises(ValueError, match="renumber") as info:
        make_split(dataset, protocol, min_user_interactions=1)
    assert "ml-1m.test.rating" in str(info.value)


def test_strong_generalization_filters_train_and_test_together():
    # Raw user 1 -> items {0, 1, 2, 3, 5, 6} in train and item 4 in the test
    # file, raw user 2 -> {1, ..., 6} and item 0 (held-out users need 5 items
    # to be evaluated); user 0 (one row) is filtered out, which renumbers the
    # users: the test rows must follow their users.
    train_pairs = {
        1: [0, 1, 2, 3, 5, 6],
        2: [1, 2, 3, 4, 5, 6],
        3: [2, 3, 0, 4, 5, 6, 1],
        0: [7],
    }
    users = [u for u, items in train_pairs.items() for _ in items]
    items = [i for u, row in train_pairs.items() for i in row]
    train = Interactions(users, items, 4, 8)
    test = Interactions([1, 2], [4, 0], 4, 8)
    dataset = Dataset("g", train, test=test)
    split = make_split(
        dataset, "strong_generalization", min_user_interactions=2, num_heldout_users=1
    )
    final = split.train
    pairs = set()
    for user, seq in enumerate(final.sequences()):
        pairs |= _pairs(final, [user] * len(seq), seq)
    for part in (split.validation, split.test):
        for row, user in enumerate(part.users):
            items = np.concatenate([part.histories[row], part.targets[row].indices])
            pairs |= _pairs(final, [user] * len(items), items)
    expected = {(u, i) for u in (1, 2, 3) for i in train_pairs[u]}
    expected |= {(1, 4), (2, 0)}
    assert all(len(part) == 1 for part in (split.validation, split.test))
    # Items that no training user has are dropped by the protocol.
    kept = set(final.raw_item_ids.tolist())
    assert pairs == {p for p in expected if p[1] in kept}


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "3"])
def test_num_heldout_users_must_be_a_positive_integer(value):
    data = Interactions(np.repeat(np.arange(20), 5), np.tile(np.arange(5), 20), 20, 5)
    with pytest.raises(ValueError, match="num_heldout_users"):
        make_split(Dataset("b", data), "strong_generalization", num_heldout_users=value)
    split = make_split(Dataset("b", data), "strong_generalization", num_heldout_users=2)
    assert (len(split.validation), len(split.test)) == (2, 2)

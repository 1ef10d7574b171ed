"""`load_dataset(name, data_dir)` and `make_split(dataset, protocol, seed)`."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable

import numpy as np

from keras_rec.data import readers, splits
from keras_rec.data.interactions import Interactions
from keras_rec.data.pipelines import check_count
from keras_rec.data.synthetic import make_synthetic

DATA_DIR_ENV = "KERAS_REC_DATA_DIR"
PROTOCOLS = ("loo_sampled", "loo_full", "holdout_full", "strong_generalization")


@dataclasses.dataclass
class Dataset:
    """A loaded dataset: its interactions and any evaluation files it ships.

    Args:
        name: the registry name.
        interactions: all interactions (for file-pair datasets: the training file).
        test: a given test file (NGCF/LightGCN), if any.
        test_items: NCF's `(users, items)` test rows, if any.
        test_negatives: NCF's fixed negatives `[users, N]`, if any.
        files: the files read (their sha256 is the dataset checksum).
    """

    name: str
    interactions: Interactions
    test: Interactions | None = None
    test_items: tuple[np.ndarray, np.ndarray] | None = None
    test_negatives: np.ndarray | None = None
    files: tuple[str, ...] = ()

    def checksum(self) -> str:
        """sha256 over the files read, or over the interactions if generated."""
        if not self.files:
            return self.interactions.checksum()
        digest = hashlib.sha256()
        for path in self.files:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()


def resolve_data_dir(data_dir: str | None) -> str:
    """`data_dir`, else `$KERAS_REC_DATA_DIR`, else `./data`."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or "data"


def _require(data_dir: str, name: str, relative: list[str]) -> list[str]:
    paths = [os.path.join(data_dir, r) for r in relative]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"Dataset {name!r} needs the files {relative} under the data directory "
            f"{os.path.abspath(data_dir)!r}; missing: {missing}. Pass --data-dir or "
            f"set ${DATA_DIR_ENV}."
        )
    return paths


def _first_existing(data_dir: str, name: str, options: list[str]) -> str:
    for option in options:
        if os.path.exists(os.path.join(data_dir, option)):
            return option
    raise FileNotFoundError(
        f"Dataset {name!r} needs one of the files {options} under the data "
        f"directory {os.path.abspath(data_dir)!r}; none exists. Pass --data-dir "
        f"or set ${DATA_DIR_ENV}."
    )


def _ml100k(data_dir: str) -> Dataset:
    (path,) = _require(data_dir, "ml-100k", ["ml-100k/u.data"])
    return Dataset("ml-100k", readers.read_movielens_100k(path), files=(path,))


def _ml1m(data_dir: str) -> Dataset:
    rel = _first_existing(
        data_dir, "ml-1m", ["ml-1m/ratings.dat", "ml-1m/interactions.dat"]
    )
    (path,) = _require(data_dir, "ml-1m", [rel])
    return Dataset("ml-1m", readers.read_movielens_dat(path, "ml-1m"), files=(path,))


def _ncf_ml1m(data_dir: str) -> Dataset:
    train_rel = _first_existing(
        data_dir,
        "ncf-ml-1m",
        ["ncf-ml-1m/ml-1m.train.rating", "ml-1m/ncf-ml-1m.train.pairs"],
    )
    train_path, rating_path, negative_path = _require(
        data_dir,
        "ncf-ml-1m",
        [train_rel, "ncf-ml-1m/ml-1m.test.rating", "ncf-ml-1m/ml-1m.test.negative"],
    )
    users, items, negatives = readers.read_ncf_test_negative(negative_path)
    rating_users, rating_items = readers.read_ncf_test_rating(rating_path)
    if not (
        np.array_equal(users, rating_users) and np.array_equal(items, rating_items)
    ):
        raise readers.DataFormatError(
            f"{negative_path} and {rating_path} disagree on the (user, item) test rows"
        )
    train = readers.read_ncf_train(train_path)
    _check_ncf_test_rows(train, users, items, negatives, negative_path)
    train = dataclasses.replace(
        train,
        num_users=max(train.num_users, int(users.max()) + 1),
        num_items=max(train.num_items, int(max(items.max(), negatives.max())) + 1),
        name="ncf-ml-1m",
    )
    return Dataset(
        "ncf-ml-1m",
        train,
        test_items=(users, items),
        test_negatives=negatives,
        files=(train_path, rating_path, negative_path),
    )


def _check_ncf_test_rows(
    train: Interactions,
    users: np.ndarray,
    items: np.ndarray,
    negatives: np.ndarray,
    path: str,
) -> None:
    """NCF's test rows must be one per training user, with ids >= 0, and a
    test item and negatives the user does not have in training."""
    for what, values in (("user", users), ("item", items), ("negative", negatives)):
        if values.size and values.min() < 0:
            raise readers.DataFormatError(
                f"{path}: a test {what} id is negative ({values.min()})"
            )
    unique, counts = np.unique(users, return_counts=True)
    if np.any(counts > 1):
        raise readers.DataFormatError(
            f"{path}: user {unique[counts > 1][0]} has {counts.max()} test rows; "
            "leave-one-out has one per user"
        )
    known = np.zeros(max(train.num_users, int(users.max()) + 1), bool)
    known[np.unique(train.user_ids)] = True
    if not known[users].all():
        raise readers.DataFormatError(
            f"{path}: test user {users[~known[users]][0]} has no training row"
        )
    # (user, item) pairs as one int64 key each, to look up in training.
    width = np.int64(
        max(train.num_items, int(items.max()) + 1, int(negatives.max(initial=-1)) + 1)
    )
    training_keys = train.user_ids * width + train.item_ids
    seen = np.isin(users * width + items, training_keys)
    if seen.any():
        row = np.flatnonzero(seen)[0]
        raise readers.DataFormatError(
            f"{path}: the test item {items[row]} of user {users[row]} is also "
            f"in the user's training rows ({seen.sum()} such test rows)"
        )
    keys = np.repeat(users, negatives.shape[1]) * width + negatives.ravel()
    trained = np.isin(keys, training_keys)
    if trained.any():
        row, column = divmod(int(np.flatnonzero(trained)[0]), negatives.shape[1])
        raise readers.DataFormatError(
            f"{path}: negative {negatives[row, column]} of user {users[row]} "
            f"is one of the user's training items ({trained.sum()} such "
            "negatives); a negative must be an item the user never had"
        )


def _sequence_file(name: str, relative: str, reader: Callable) -> Callable:
    def load(data_dir: str) -> Dataset:
        (path,) = _require(data_dir, name, [relative])
        return Dataset(name, reader(path, name), files=(path,))

    return load


def _graph_split(name: str, folder: str) -> Callable:
    def load(data_dir: str) -> Dataset:
        train_path, test_path = _require(
            data_dir, name, [f"{folder}/train.txt", f"{folder}/test.txt"]
        )
        train, test = readers.read_ngcf_split(train_path, test_path, name)
        return Dataset(name, train, test=test, files=(train_path, test_path))

    return load


def _movielens_csv(name: str) -> Callable:
    def load(data_dir: str) -> Dataset:
        (path,) = _require(data_dir, name, [f"{name}/ratings.csv"])
        return Dataset(name, readers.read_movielens_csv(path, name), files=(path,))

    return load


NETFLIX_FILES = [f"netflix/combined_data_{i}.txt" for i in range(1, 5)]


def _netflix(data_dir: str) -> Dataset:
    """Kaggle's `combined_data_{1..4}.txt`, else `training_set/mv_*.txt`."""
    folder = os.path.join(data_dir, "netflix", "training_set")
    if os.path.isdir(folder) and not os.path.exists(
        os.path.join(data_dir, NETFLIX_FILES[0])
    ):
        paths = sorted(
            os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".txt")
        )
        if not paths:
            raise FileNotFoundError(f"Dataset 'netflix': no mv_*.txt in {folder!r}")
    else:
        paths = _require(data_dir, "netflix", NETFLIX_FILES)
    return Dataset("netflix", readers.read_netflix(paths), files=tuple(paths))


def _synthetic(data_dir: str) -> Dataset:
    return Dataset("synthetic", make_synthetic())


LOADERS: dict[str, Callable[[str], Dataset]] = {
    "synthetic": _synthetic,
    "ml-100k": _ml100k,
    "ml-1m": _ml1m,
    "ncf-ml-1m": _ncf_ml1m,
    "games": _sequence_file("games", "sasrec/Video.txt", readers.read_user_item_pairs),
    "beauty": _sequence_file(
        "beauty", "seq-s3rec-iclrec/Beauty.txt", readers.read_user_sequences
    ),
    "gowalla": _graph_split("gowalla", "gowalla"),
    "yelp2018": _graph_split("yelp2018", "yelp2018"),
    "amazon-book": _graph_split("amazon-book", "amazon-book"),
    "ml-20m": _movielens_csv("ml-20m"),
    "ml-25m": _movielens_csv("ml-25m"),
    "netflix": _netflix,
}


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Loads a registered dataset from `data_dir` (see `LOADERS` for names).

    Names starting with `tfds:` (e.g. `tfds:movielens/1m-ratings`) are read
    through TensorFlow Datasets (see `keras_rec.data.tfds`).
    """
    if name.startswith("tfds:"):
        from keras_rec.data.tfds import load_tfds_movielens

        interactions = load_tfds_movielens(
            name[5:], data_dir=data_dir or os.environ.get(DATA_DIR_ENV)
        )
        return Dataset(name, interactions)
    if name not in LOADERS:
        raise ValueError(
            f"Unknown dataset {name!r}. Known: {sorted(LOADERS)} or 'tfds:<name>'"
        )
    return LOADERS[name](resolve_data_dir(data_dir))


# Where a dataset's registered files lack timestamps, the file that has them.
TIMESTAMPED_FILES = {
    "ml-1m": "ml-1m/ratings.dat (`user::item::rating::timestamp`, GroupLens' "
    "original; it is read instead of ml-1m/interactions.dat when present)",
}


def _check_heldout_users(num_heldout_users) -> None:
    if num_heldout_users is None:
        return
    if isinstance(num_heldout_users, bool) or not isinstance(
        num_heldout_users, int | np.integer
    ):
        raise ValueError(
            "`num_heldout_users` must be a positive integer (or None for 10% of "
            f"the users). Received num_heldout_users={num_heldout_users!r}"
        )
    if num_heldout_users < 1:
        raise ValueError(
            "`num_heldout_users` must be at least 1 (None gives 10% of the "
            f"users). Received num_heldout_users={num_heldout_users}"
        )


def _files(dataset: Dataset) -> str:
    return ", ".join(dataset.files) if dataset.files else "no files: built in memory"


def _check_loo(dataset: Dataset, data: Interactions, protocol: str) -> None:
    """Leave-one-out by time needs the time order, and a dataset that ships
    its own test file is evaluated on that file, not on a split of train."""
    if dataset.test is not None:
        raise ValueError(
            f"Dataset {dataset.name!r} ships a test file ({_files(dataset)}), so "
            f"{protocol!r} (leave-one-out) would ignore it and hold out each "
            "user's last training row instead. Its train/test files carry no "
            "time order. Use protocol 'holdout_full' (the given train/test "
            "split) or 'strong_generalization'."
        )
    if data.timestamps is None:
        hint = TIMESTAMPED_FILES.get(dataset.name)
        needed = (
            f" Leave-one-out needs {hint}."
            if hint
            else " Read it from a file with timestamps (or, if its rows are in "
            "time order, give a running index as the timestamps, as "
            "`read_user_item_pairs` does)."
        )
        raise ValueError(
            f"Dataset {dataset.name!r} has no timestamps ({_files(dataset)}), and "
            "its file order is not (known to be) time order, so "
            f"{protocol!r} cannot hold out each user's latest interaction; "
            f"it would hold out the last row in the file.{needed} Protocols "
            "that need no time order: 'holdout_full', 'strong_generalization'."
        )


def make_split(
    dataset: Dataset,
    protocol: str,
    seed: int = 0,
    num_negatives: int = 100,
    validation: bool = True,
    num_heldout_users: int | None = None,
    min_rating: float | None = None,
    min_user_interactions: int | None = None,
    min_item_interactions: int | None = None,
) -> splits.Split:
    """The `Split` that `protocol` (one of `PROTOCOLS`) evaluates on.

    * `loo_sampled` / `loo_full`: NCF's files when the dataset ships them
      (their fixed negatives, whatever `num_negatives` says; with
      `validation`, one random training item per user is held out, with
      as many seeded negatives), else
      leave-one-out by time with `num_negatives` seeded uniform negatives
      (`loo_sampled` only). Leave-one-out raises `ValueError` on data
      without timestamps (file order is not taken as time order; readers
      whose file order is time order give a running index as timestamps)
      and on datasets that ship a test file (use `holdout_full`).
    * `holdout_full`: the given train/test files, else a seeded 80/20 holdout.
    * `strong_generalization`: all interactions (train and test merged),
      `num_heldout_users` (a positive integer; None: 10% of the users)
      validation and as many test users.

    `min_rating` keeps ratings at or above it and `min_user_interactions`
    then keeps users with that many of them (Mult-VAE's ML-20M and Netflix
    preprocessing: ratings > 3.5, users with 5 or more);
    `min_item_interactions` keeps items with that many, counted in the same
    pass (SASRec's: users and items with fewer than 5 actions dropped once,
    `Interactions.filter`). Filtering renumbers
    the ids, so with a dataset's own test file or NCF test rows it is only
    allowed under `strong_generalization` (which filters the merged data);
    elsewhere it raises `ValueError`.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}. Known: {PROTOCOLS}")
    _check_heldout_users(num_heldout_users)
    check_count(num_negatives=num_negatives)
    if min_user_interactions is not None:
        check_count(min_user_interactions=min_user_interactions)
    if min_item_interactions is not None:
        check_count(min_item_interactions=min_item_interactions)
    filtering = (
        min_rating is not None
        or bool(min_user_interactions)
        or bool(min_item_interactions)
    )
    counts = {
        "min_user_interactions": min_user_interactions,
        "min_item_interactions": min_item_interactions,
    }
    data = dataset.interactions
    if protocol == "strong_generalization":
        held_out = dataset.test_items or (
            (dataset.test.user_ids, dataset.test.item_ids)
            if dataset.test is not None
            else None
        )
        if held_out is not None:  # all interactions: train and test merged
            data = dataclasses.replace(
                data,
                user_ids=np.concatenate([data.user_ids, held_out[0]]),
                item_ids=np.concatenate([data.item_ids, held_out[1]]),
                timestamps=None,
                ratings=None,
            )
        if filtering:
            data = data.filter(min_rating=min_rating, **counts)
        heldout = num_heldout_users or max(1, data.num_users // 10)
        return splits.strong_generalization(data, heldout, heldout, seed=seed)
    if filtering and (dataset.test is not None or dataset.test_items is not None):
        raise ValueError(
            "`min_rating`/`min_user_interactions`/`min_item_interactions` renumber "
            f"the users and items of {dataset.name!r}, but its test file(s) "
            f"({_files(dataset)}) use "
            f"the unfiltered ids, so {protocol!r} would pair them with the wrong "
            "users and items. Filter the files themselves, or use "
            "'strong_generalization' (which filters train and test together)."
        )
    if filtering:
        data = data.filter(min_rating=min_rating, **counts)
    if protocol in ("loo_sampled", "loo_full"):
        if dataset.test_items is not None:
            users, items = dataset.test_items
            sequences = data.sequences()
            test = splits.EvalSet(
                users=users,
                histories=[sequences[u] for u in users],
                targets=splits.targets_matrix(
                    [items[i : i + 1] for i in range(len(items))], data.num_items
                ),
                negatives=dataset.test_negatives,
            )
            if not validation:
                return splits.Split(train=data, test=test, protocol=protocol)
            # The files fix only the test item: one random training item per
            # user is validation (NCF section 4.1), with as many seeded
            # negatives as the test has, never the user's test item.
            train, valid = splits.random_item_validation(data, seed)
            if protocol == "loo_sampled":
                valid.negatives = splits.sample_negatives(
                    valid,
                    dataset.test_negatives.shape[1],
                    data.num_items,
                    seed + 1,
                    exclude=splits.targets_of(test, valid.users),
                )
            return splits.Split(
                train=train, test=test, validation=valid, protocol=protocol
            )
        _check_loo(dataset, data, protocol)
        split = splits.leave_one_out(data, validation=validation)
        if protocol == "loo_sampled":
            # A test history holds the validation item; a validation one
            # lacks the test item, which is excluded explicitly: negatives
            # are items the user never interacted with.
            split.test.negatives = splits.sample_negatives(
                split.test, num_negatives, data.num_items, seed
            )
            if split.validation is not None:
                split.validation.negatives = splits.sample_negatives(
                    split.validation,
                    num_negatives,
                    data.num_items,
                    seed + 1,
                    exclude=splits.targets_of(split.test, split.validation.users),
                )
        split.protocol = protocol
        return split
    # holdout_full: the given train/test files, else a seeded 80/20 holdout.
    if dataset.test_items is not None:
        raise ValueError(
            f"Dataset {dataset.name!r} ships leave-one-out test rows "
            f"({_files(dataset)}), so 'holdout_full' (a random 80/20 holdout "
            "of its training file) would ignore them. Use 'loo_full' or "
            "'loo_sampled' (those rows), or 'strong_generalization'."
        )
    if dataset.test is not None:
        split = splits.given_split(data, dataset.test)
    else:
        split = splits.random_holdout(data, 0.2, seed)
    split.protocol = protocol
    return split

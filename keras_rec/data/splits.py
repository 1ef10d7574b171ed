"""Protocol splits: leave-one-out, given files, strong generalization, holdout."""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np
import scipy.sparse as sp

from keras_rec.data.interactions import Interactions


@dataclasses.dataclass
class EvalSet:
    """Users to evaluate, what each one's model input is, and what to predict.

    Args:
        users: int64 `[n]` ids in the training id space (for id-based models).
        histories: per user, the items the model sees, in time order. These
            are excluded from the ranking.
        targets: CSR `[n, num_items]`: the relevant items of each user.
        negatives: optional int64 `[n, N]` sampled negatives (`loo_sampled`).
        known_users: whether `users` were seen in training (false for the
            held-out users of strong generalization).
    """

    users: np.ndarray
    histories: list[np.ndarray]
    targets: sp.csr_matrix
    negatives: np.ndarray | None = None
    known_users: bool = True

    def __post_init__(self):
        """Checks the parts agree: one history, target row and negatives row
        per user, and every item id in `[0, num_items)` (an id past the
        catalogue would drop a target or leave an item unmasked silently)."""
        self.users = np.asarray(self.users)
        if not sp.issparse(self.targets) or self.targets.ndim != 2:
            raise ValueError(
                "`targets` must be a SciPy CSR matrix [users, num_items]. "
                f"Received {type(self.targets).__name__}"
            )
        self.targets = sp.csr_matrix(self.targets)
        counts = {
            "users": len(self.users),
            "histories": len(self.histories),
            "target rows": self.targets.shape[0],
        }
        if self.negatives is not None:
            self.negatives = np.asarray(self.negatives)
            if self.negatives.ndim != 2:
                raise ValueError(
                    "`negatives` must be [users, N]. Received shape "
                    f"{self.negatives.shape}"
                )
            counts["negatives rows"] = len(self.negatives)
        if len(set(counts.values())) > 1:
            raise ValueError(
                f"An EvalSet needs one of each per user. Received {counts}"
            )
        num_items = self.targets.shape[1]
        parts = {"targets": self.targets.indices}
        if len(self.histories):
            parts["histories"] = np.concatenate(
                [np.asarray(h).reshape(-1) for h in self.histories if len(h)]
                or [np.zeros(0, np.int64)]
            )
        if self.negatives is not None:
            parts["negatives"] = self.negatives.reshape(-1)
        for name, ids in parts.items():
            if ids.size and not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(
                    f"`{name}` must hold integer item ids. Received dtype {ids.dtype}"
                )
            if ids.size and (ids.min() < 0 or ids.max() >= num_items):
                bad = ids[(ids < 0) | (ids >= num_items)][0]
                raise ValueError(
                    f"`{name}` holds item id {bad}, outside [0, num_items={num_items})"
                )

    def __len__(self) -> int:
        return len(self.users)

    @functools.cached_property
    def history_matrix(self) -> sp.csr_matrix:
        """The histories as a binary CSR `[n, num_items]` (for masking)."""
        lengths = np.fromiter((len(h) for h in self.histories), np.int64, len(self))
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        indices = np.concatenate(self.histories) if len(self) else np.zeros(0, np.int64)
        matrix = sp.csr_matrix(
            (np.ones(len(indices), np.float32), indices, indptr),
            shape=self.targets.shape,
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    def update_digest(self, digest) -> None:
        """Feeds the users, histories, targets and negatives to `digest`."""
        lengths = np.fromiter((len(h) for h in self.histories), np.int64, len(self))
        parts = [
            np.asarray(self.users, np.int64),
            lengths,
            *(np.asarray(h, np.int64) for h in self.histories),
            np.asarray(self.targets.shape, np.int64),
            np.asarray(self.targets.indptr, np.int64),
            np.asarray(self.targets.indices, np.int64),
            np.asarray([self.known_users], np.int64),
        ]
        if self.negatives is not None:
            parts.append(np.asarray(self.negatives, np.int64))
        for part in parts:
            digest.update(part.tobytes())

    def take(self, rows: np.ndarray) -> EvalSet:
        return EvalSet(
            users=self.users[rows],
            histories=[self.histories[r] for r in rows],
            targets=self.targets[rows],
            negatives=None if self.negatives is None else self.negatives[rows],
            known_users=self.known_users,
        )


@dataclasses.dataclass
class Split:
    """Training interactions plus validation and test `EvalSet`s."""

    train: Interactions
    test: EvalSet
    validation: EvalSet | None = None
    protocol: str = ""

    @property
    def num_users(self) -> int:
        return self.train.num_users

    @property
    def num_items(self) -> int:
        return self.train.num_items

    def checksum(self) -> str:
        """sha256 of the training pairs and of who is evaluated on what.

        Two splits of one file differ here when the seed, the protocol's
        options or the splitting code differ: a checkpoint records it, so
        that a model is never trained on further under another split (whose
        held-out users may be in the first one's training data).
        """
        digest = hashlib.sha256(self.protocol.encode())
        digest.update(self.train.checksum().encode())
        for name, part in (("test", self.test), ("validation", self.validation)):
            digest.update(name.encode())
            if part is not None:
                part.update_digest(digest)
        return digest.hexdigest()


def targets_matrix(rows: list[np.ndarray], num_items: int) -> sp.csr_matrix:
    """Binary CSR `[len(rows), num_items]` with row `u`'s ids set.

    Raises:
        ValueError: an id outside `[0, num_items)`.
    """
    lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
    # Empty rows are left out, so an empty float array does not make the
    # ids float.
    filled = [np.asarray(r).reshape(-1) for r in rows if len(r)]
    indices = np.concatenate(filled) if filled else np.zeros(0, np.int64)
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"Target item ids must be integers. Received {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() >= num_items):
        bad = indices[(indices < 0) | (indices >= num_items)][0]
        raise ValueError(f"Target item id {bad} is outside [0, num_items={num_items})")
    matrix = sp.csr_matrix(
        (
            np.ones(len(indices), np.float32),
            indices,
            np.concatenate([[0], np.cumsum(lengths)]),
        ),
        shape=(len(rows), num_items),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _from_sequences(
    base: Interactions, sequences: dict[int, np.ndarray]
) -> Interactions:
    users = [np.full(len(s), u, np.int64) for u, s in sequences.items()]
    items = [s for s in sequences.values()]
    users_flat = np.concatenate(users) if users else np.zeros(0, np.int64)
    return Interactions(
        user_ids=users_flat,
        item_ids=np.concatenate(items) if items else np.zeros(0, np.int64),
        num_users=base.num_users,
        num_items=base.num_items,
        # Sequences are in time order: a running index keeps that order.
        timestamps=np.arange(len(users_flat), dtype=np.int64),
        raw_user_ids=base.raw_user_ids,
        raw_item_ids=base.raw_item_ids,
        name=base.name,
    )


def check_unique_pairs(data: Interactions, protocol: str) -> None:
    """Raises `ValueError` if a (user, item) pair occurs more than once: a
    split by interaction could put one copy in training and the other in
    the targets (a leaked target, or a user silently dropped from metrics
    that exclude training items)."""
    repeated = data.repeated_pairs()
    if repeated:
        pairs = data.pair_keys()
        order = np.argsort(pairs, kind="stable")
        ordered = pairs[order]
        row = int(order[1:][ordered[1:] == ordered[:-1]].min())  # first repeat
        user, item = int(data.user_ids[row]), int(data.item_ids[row])
        raw = ""
        if data.raw_user_ids is not None and data.raw_item_ids is not None:
            raw = f" (raw {data.raw_user_ids[user]}, {data.raw_item_ids[item]})"
        raise ValueError(
            f"{data.name}: {repeated} rows repeat a (user, item) pair that an "
            f"earlier row has (the first, row {row}: user {user}, item {item}"
            f"{raw}), so {protocol!r} could hold out an item the user "
            "also has in training. Keep each pair once first, e.g. "
            "`data.deduplicated()` (its earliest interaction)."
        )


def leave_one_out(
    data: Interactions,
    validation: bool = True,
    min_interactions: int | None = None,
) -> Split:
    """Latest interaction of each user = test, second latest = validation.

    "Latest" by timestamp, then, among equal timestamps, by row order (the
    last row read is the latest; `Interactions.chronological_order`).

    Users with fewer than `min_interactions` (default and at least 3 with
    validation, 2 without) stay wholly in training and are not evaluated.
    The test history includes the validation item (as SASRec evaluates).
    Raises `ValueError` on repeated (user, item) pairs (`check_unique_pairs`).
    """
    least = 3 if validation else 2
    needed = least if min_interactions is None else min_interactions
    if isinstance(needed, bool) or not isinstance(needed, int | np.integer):
        raise ValueError(f"`min_interactions` must be an integer. Received {needed!r}")
    if needed < least:
        raise ValueError(
            f"`min_interactions` must be at least {least} "
            f"({'training, validation and test' if validation else 'training and test'}"
            f" items). Received min_interactions={needed}"
        )
    check_unique_pairs(data, "leave_one_out")
    train_seq, test_rows, val_rows = {}, [], []
    for user, seq in enumerate(data.sequences()):
        if len(seq) < needed:
            train_seq[user] = seq
            continue
        cut = len(seq) - (2 if validation else 1)
        train_seq[user] = seq[:cut]
        test_rows.append((user, seq[:-1], seq[-1:]))
        if validation:
            val_rows.append((user, seq[:cut], seq[cut : cut + 1]))
    train = _from_sequences(data, train_seq)

    def eval_set(rows):
        return EvalSet(
            users=np.asarray([r[0] for r in rows], np.int64),
            histories=[r[1] for r in rows],
            targets=targets_matrix([r[2] for r in rows], data.num_items),
        )

    return Split(
        train=train,
        test=eval_set(test_rows),
        validation=eval_set(val_rows) if validation else None,
        protocol="leave_one_out",
    )


def random_item_validation(
    data: Interactions, seed: int = 0, min_interactions: int = 2
) -> tuple[Interactions, EvalSet]:
    """One training interaction per user, drawn at random, held out for
    validation (how NCF tunes on its files, whose test item is fixed).

    Users with fewer than `min_interactions` keep all of theirs and are not
    validated. Returns the remaining training interactions (file order kept)
    and the validation `EvalSet` (history = the user's other items).

    Raises:
        ValueError: no user has `min_interactions` (at least 2), or a
            (user, item) pair repeats (one copy could be held out while the
            other stays in training).
    """
    check_unique_pairs(data, "random_item_validation")
    rng = np.random.default_rng(seed)
    order = np.argsort(data.user_ids, kind="stable")
    counts = np.bincount(data.user_ids, minlength=data.num_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    needed = max(2, min_interactions)
    users = np.flatnonzero(counts >= needed)
    if users.size == 0:
        raise ValueError(
            f"No user has {needed} or more interactions to hold one out for validation"
        )
    picked = order[starts[users] + rng.integers(0, counts[users])]
    keep = np.ones(len(data), bool)
    keep[picked] = False
    train = data.subset(keep)
    sequences = train.sequences()
    validation = EvalSet(
        users=users.astype(np.int64),
        histories=[sequences[u] for u in users],
        targets=targets_matrix(
            [data.item_ids[[row]] for row in picked], data.num_items
        ),
    )
    return train, validation


def given_split(train: Interactions, test: Interactions) -> Split:
    """A train/test file pair (NGCF/LightGCN `train.txt`/`test.txt`).

    Every user with at least one test item is evaluated; their history is
    their training items. Both must be in one id space: when both carry raw
    id vocabularies (files read separately, each remapped by `from_raw`),
    these must be equal, else `ValueError` (read the two files into one
    vocabulary, e.g. `from_raw` over their concatenation, then split).

    Also `ValueError` when a test user has no training item (nothing to
    score from). A test item the user also has in training stays in the
    targets here; `holdout_full` masks the training items and does not count
    it as a target.
    """
    if (train.num_users, train.num_items) != (test.num_users, test.num_items):
        raise ValueError(
            "train and test must share one id space. Received "
            f"{train.num_users}x{train.num_items} and {test.num_users}x{test.num_items}"
        )
    for label, train_raw, test_raw in (
        ("user", train.raw_user_ids, test.raw_user_ids),
        ("item", train.raw_item_ids, test.raw_item_ids),
    ):
        if train_raw is None or test_raw is None:
            continue
        if not np.array_equal(train_raw, test_raw):
            differ = np.flatnonzero(np.asarray(train_raw) != np.asarray(test_raw))
            first = int(differ[0])
            raise ValueError(
                f"train ({train.name}) and test ({test.name}) have the same number "
                f"of {label}s but different raw {label} ids: {label} id {first} "
                f"is raw {label} {np.asarray(train_raw)[first].tolist()!r} in train "
                f"and {np.asarray(test_raw)[first].tolist()!r} in test "
                f"({len(differ)} ids differ). They "
                "were remapped separately; read both files into one vocabulary "
                "(e.g. `Interactions.from_raw` over both, then split the rows)."
            )
    test_matrix = test.to_csr()
    users = np.flatnonzero(np.diff(test_matrix.indptr) > 0)
    cold = users[train.user_counts()[users] == 0]
    if cold.size:
        raise ValueError(
            f"{cold.size} test users of {test.name} have no training item in "
            f"{train.name} (the first: user id {int(cold[0])}); they cannot be "
            "scored from their history. Remove them from the test file."
        )
    train_seq = train.sequences()
    return Split(
        train=train,
        test=EvalSet(
            users=users.astype(np.int64),
            histories=[train_seq[u] for u in users],
            targets=test_matrix[users],
        ),
        protocol="given",
    )


def random_holdout(
    data: Interactions, test_fraction: float = 0.2, seed: int = 0
) -> Split:
    """Per user, a seeded random `test_fraction` of items (at least one when the
    user has two or more) goes to test; the rest is training."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"`test_fraction` must be in (0, 1). Received test_fraction={test_fraction}"
        )
    check_unique_pairs(data, "random_holdout")
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(data), bool)
    order = data.chronological_order()
    bounds = np.searchsorted(data.user_ids[order], np.arange(data.num_users + 1))
    for user in range(data.num_users):
        rows = order[bounds[user] : bounds[user + 1]]
        if len(rows) < 2:
            continue
        # At least one row goes to test and at least one stays in training.
        count = min(len(rows) - 1, max(1, int(round(test_fraction * len(rows)))))
        is_test[rng.choice(rows, size=count, replace=False)] = True
    return dataclasses.replace(
        given_split(data.subset(~is_test), data.subset(is_test)),
        protocol="random_holdout",
    )


#: Held-out users with fewer items are not evaluated by `strong_generalization`.
MIN_HELDOUT_ITEMS = 5


def strong_generalization(
    data: Interactions,
    num_validation_users: int,
    num_test_users: int,
    fold_in_fraction: float = 0.8,
    seed: int = 98765,
) -> Split:
    """Mult-VAE's protocol: disjoint held-out users, 80% fold-in / 20% targets.

    Users are shuffled with `seed`; the last `num_test_users` are test users,
    the `num_validation_users` before them validation users, the rest train.
    Items that no training user has are dropped (the model cannot score them),
    as in the paper's preprocessing. As the paper's code
    (`split_train_test_proportion` in dawenl/vae_cf) does, a held-out user
    with n items keeps `floor((1 - fold_in_fraction) * n)` of them, drawn at
    random, as targets and the rest as fold-in; a held-out user with fewer
    than `MIN_HELDOUT_ITEMS` (5) items after the item filter, or with no
    target at that fraction, is not evaluated (the paper's code keeps such
    users as fold-in only; its datasets have none).
    """
    for label, value, least in (
        ("num_validation_users", num_validation_users, 0),
        ("num_test_users", num_test_users, 1),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | np.integer)
            or value < least
        ):
            raise ValueError(
                f"`{label}` must be an integer >= {least}. Received {label}={value!r}"
            )
    if not 0.0 < fold_in_fraction < 1.0:
        raise ValueError(
            "`fold_in_fraction` must be in (0, 1). "
            f"Received fold_in_fraction={fold_in_fraction}"
        )
    check_unique_pairs(data, "strong_generalization")
    held_out = num_validation_users + num_test_users
    if held_out >= data.num_users:
        raise ValueError(
            f"{held_out} held-out users requested but {data.name} has only "
            f"{data.num_users} users"
        )
    rng = np.random.default_rng(seed)
    permutation = rng.permutation(data.num_users)
    train_users = permutation[: data.num_users - held_out]
    val_users = permutation[data.num_users - held_out : data.num_users - num_test_users]
    test_users = permutation[data.num_users - num_test_users :]

    in_train = np.zeros(data.num_users, bool)
    in_train[train_users] = True
    train_items = np.unique(data.item_ids[in_train[data.user_ids]])
    data = data.subset(np.isin(data.item_ids, train_items)).compact(users=False)

    sequences = data.sequences()
    train = _from_sequences(data, {u: sequences[u] for u in np.sort(train_users)})

    def eval_set(users: np.ndarray) -> EvalSet:
        rows, histories, targets = [], [], []
        for user in np.sort(users):
            seq = sequences[user]
            # The 1e-9 keeps e.g. (1 - 0.8) * 5 = 0.99999... at 1.
            count = int(np.floor((1.0 - fold_in_fraction) * len(seq) + 1e-9))
            if len(seq) < MIN_HELDOUT_ITEMS or count < 1:
                continue
            held = np.zeros(len(seq), bool)
            held[rng.choice(len(seq), size=count, replace=False)] = True
            rows.append(user)
            histories.append(seq[~held])
            targets.append(seq[held])
        if len(users) and not rows:
            raise ValueError(
                f"strong_generalization: none of the {len(users)} held-out users "
                f"drawn has {MIN_HELDOUT_ITEMS} or more items (of those training "
                "users have) with at least one target at "
                f"fold_in_fraction={fold_in_fraction}, so there is nothing to "
                "evaluate; hold out more users or use a lower fold_in_fraction"
            )
        return EvalSet(
            users=np.asarray(rows, np.int64),
            histories=histories,
            targets=targets_matrix(targets, data.num_items),
            known_users=False,
        )

    return Split(
        train=train,
        test=eval_set(test_users),
        validation=eval_set(val_users),
        protocol="strong_generalization",
    )


def targets_of(eval_set: EvalSet, users: np.ndarray) -> sp.csr_matrix:
    """CSR `[len(users), num_items]`: `eval_set`'s targets of each of `users`
    (user ids), an empty row for a user it does not evaluate. Pass it as
    `sample_negatives`' `exclude` so that another part's negatives never
    hold a user's own target of this part."""
    users = np.asarray(users, np.int64)
    position = dict(zip(eval_set.users.tolist(), range(len(eval_set)), strict=True))
    if len(position) != len(eval_set):
        raise ValueError(
            f"The evaluation set lists users more than once ({len(eval_set)} "
            f"rows, {len(position)} users), so a user's targets are not one row"
        )
    rows = np.fromiter((position.get(u, -1) for u in users.tolist()), np.int64)
    found = rows >= 0
    selected = eval_set.targets[rows[found]].tocoo()
    return sp.csr_matrix(
        (selected.data, (np.flatnonzero(found)[selected.row], selected.col)),
        shape=(len(users), eval_set.targets.shape[1]),
    )


def sample_negatives(
    split_eval: EvalSet,
    num_negatives: int,
    num_items: int,
    seed: int,
    exclude: sp.csr_matrix | None = None,
) -> np.ndarray:
    """`[n, num_negatives]` items drawn uniformly (without replacement per user)
    from those the user has neither in history/`exclude` nor in targets."""
    rng = np.random.default_rng(seed)
    seen = split_eval.history_matrix + split_eval.targets
    if exclude is not None:
        seen = seen + exclude
    seen = seen.tocsr()
    out = np.empty((len(split_eval), num_negatives), np.int64)
    for row in range(len(split_eval)):
        used = seen.indices[seen.indptr[row] : seen.indptr[row + 1]]
        if num_items - len(used) < num_negatives:
            raise ValueError(
                f"user {split_eval.users[row]} has only {num_items - len(used)} "
                f"unseen items, fewer than num_negatives={num_negatives}"
            )
        chosen = np.empty(0, np.int64)
        while len(chosen) < num_negatives:
            draw = rng.integers(0, num_items, size=2 * num_negatives)
            draw = draw[~np.isin(draw, used)]
            chosen = np.concatenate([chosen, draw])
            _, first = np.unique(chosen, return_index=True)
            chosen = chosen[np.sort(first)]
        out[row] = chosen[:num_negatives]
    return out

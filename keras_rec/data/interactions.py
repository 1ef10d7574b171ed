"""The `Interactions` container: who interacted with what, in contiguous ids."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import scipy.sparse as sp


def as_int64(values, label: str) -> np.ndarray:
    """`values` as an int64 array; floats must be finite whole numbers.

    Raises `ValueError` naming `label` for a float with a fractional part (or
    NaN/inf), instead of truncating it as `astype(np.int64)` would.
    """
    array = np.asarray(values)
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            first = np.flatnonzero(bad.ravel())[0]
            raise ValueError(
                f"`{label}` must be integers, but {int(bad.sum())} of "
                f"{array.size} values are not whole numbers (the first, at "
                f"position {first}, is {array.ravel()[first].item()!r}). Converting "
                "them would truncate them; map them to integers first (for "
                "fractional times, e.g. scale them to whole seconds)."
            )
    return np.asarray(array, dtype=np.int64)


@dataclasses.dataclass
class Interactions:
    """Implicit-feedback interactions with contiguous 0-based user and item ids.

    Rows are kept in the order given; when `timestamps` are present, per-user
    histories are sorted by time (stable, so ties keep file order), otherwise
    `sequences()` lists them in file order. File order is not assumed to be
    time order: `make_split` refuses leave-one-out on data without
    timestamps, so readers whose file order is time order declare it with a
    running index as the timestamps (`read_user_item_pairs`).

    Ids and timestamps must be integers: integer-valued floats (as pandas
    makes of integer columns with missing values) are accepted, floats with
    a fractional part (or NaN/inf) raise `ValueError` rather than being
    truncated; rescale fractional times to integers (e.g. seconds) first.

    Args:
        user_ids: int64 array `[n]`, values in `[0, num_users)`.
        item_ids: int64 array `[n]`, values in `[0, num_items)`.
        num_users: size of the user vocabulary.
        num_items: size of the item vocabulary.
        timestamps: optional int64 array `[n]`.
        ratings: optional float32 array `[n]`.
        raw_user_ids: optional array `[num_users]`: the raw id of each user.
        raw_item_ids: optional array `[num_items]`: the raw id of each item.
        name: a short name used in results files.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    num_users: int
    num_items: int
    timestamps: np.ndarray | None = None
    ratings: np.ndarray | None = None
    raw_user_ids: np.ndarray | None = None
    raw_item_ids: np.ndarray | None = None
    name: str = "interactions"

    def __post_init__(self) -> None:
        self.user_ids = as_int64(self.user_ids, "user_ids")
        self.item_ids = as_int64(self.item_ids, "item_ids")
        if self.user_ids.shape != self.item_ids.shape or self.user_ids.ndim != 1:
            raise ValueError(
                "`user_ids` and `item_ids` must be 1-D arrays of the same length. "
                f"Received shapes {self.user_ids.shape} and {self.item_ids.shape}"
            )
        for label, size in (
            ("num_users", self.num_users),
            ("num_items", self.num_items),
        ):
            if isinstance(size, bool) or not isinstance(size, int | np.integer):
                raise ValueError(f"`{label}` must be an integer. Received {size!r}")
            if size < 0:
                raise ValueError(f"`{label}` must be >= 0. Received {label}={size}")
        for label, values, size in (
            ("user", self.user_ids, self.num_users),
            ("item", self.item_ids, self.num_items),
        ):
            if values.size and (values.min() < 0 or values.max() >= size):
                raise ValueError(
                    f"{label} ids must lie in [0, num_{label}s={size}). "
                    f"Received min={values.min()}, max={values.max()}"
                )
        if self.timestamps is not None:
            self.timestamps = as_int64(self.timestamps, "timestamps")
        if self.ratings is not None:
            self.ratings = np.asarray(self.ratings, dtype=np.float32)
            bad = ~np.isfinite(self.ratings)
            if bad.any():
                raise ValueError(
                    f"`ratings` must be finite numbers, but {int(bad.sum())} are "
                    f"NaN or inf (the first at position {np.flatnonzero(bad)[0]})"
                )
        for label in ("timestamps", "ratings"):
            value = getattr(self, label)
            if value is not None and len(value) != len(self.user_ids):
                raise ValueError(
                    f"`{label}` has {len(value)} entries but there are "
                    f"{len(self.user_ids)} interactions"
                )

    def __len__(self) -> int:
        return int(self.user_ids.size)

    def __repr__(self) -> str:
        return (
            f"Interactions(name={self.name!r}, users={self.num_users}, "
            f"items={self.num_items}, interactions={len(self)})"
        )

    # --- views ---------------------------------------------------------

    def to_csr(self, binary: bool = True) -> sp.csr_matrix:
        """The `[num_users, num_items]` matrix; duplicates collapse to 1 if binary."""
        data = np.ones(len(self), dtype=np.float32)
        matrix = sp.csr_matrix(
            (data, (self.user_ids, self.item_ids)),
            shape=(self.num_users, self.num_items),
        )
        matrix.sum_duplicates()
        if binary:
            matrix.data[:] = 1.0
        matrix.sort_indices()
        return matrix

    def chronological_order(self) -> np.ndarray:
        """Row permutation grouping rows by user, in time order within a user
        (rows with equal timestamps keep their order: a stable sort)."""
        if self.timestamps is not None:
            return np.lexsort((self.timestamps, self.user_ids))
        return np.argsort(self.user_ids, kind="stable")

    def sequences(self) -> list[np.ndarray]:
        """Each user's items in chronological order (a list of length num_users)."""
        order = self.chronological_order()
        users = self.user_ids[order]
        items = self.item_ids[order]
        bounds = np.searchsorted(users, np.arange(self.num_users + 1))
        return [items[bounds[u] : bounds[u + 1]] for u in range(self.num_users)]

    def pair_keys(self) -> np.ndarray:
        """int64 `[len(self)]`: one key per (user, item) pair, equal for equal
        pairs (`user * num_items + item`)."""
        return self.user_ids * np.int64(max(self.num_items, 1)) + self.item_ids

    def repeated_pairs(self) -> int:
        """Rows whose (user, item) pair an earlier row already has."""
        pairs = self.pair_keys()
        return int(len(pairs) - np.unique(pairs).size)

    def deduplicated(self) -> Interactions:
        """Each (user, item) pair once: its earliest row in time order (file
        order without timestamps), the rows otherwise kept in their order."""
        order = self.chronological_order()
        pairs = self.pair_keys()
        _, first = np.unique(pairs[order], return_index=True)
        keep = np.zeros(len(self), bool)
        keep[order[first]] = True
        return self.subset(keep)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.item_ids, minlength=self.num_items)

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.user_ids, minlength=self.num_users)

    def checksum(self) -> str:
        """sha256 of the (user, item) pairs: identifies the data a run used."""
        digest = hashlib.sha256()
        digest.update(np.asarray([self.num_users, self.num_items]).tobytes())
        digest.update(self.user_ids.tobytes())
        digest.update(self.item_ids.tobytes())
        return digest.hexdigest()

    def subset(self, mask: np.ndarray) -> Interactions:
        """The rows where `mask` is true, with the same id vocabularies."""

        def pick(values):
            return None if values is None else values[mask]

        return dataclasses.replace(
            self,
            user_ids=self.user_ids[mask],
            item_ids=self.item_ids[mask],
            timestamps=pick(self.timestamps),
            ratings=pick(self.ratings),
        )

    @classmethod
    def from_raw(
        cls,
        raw_users: np.ndarray,
        raw_items: np.ndarray,
        timestamps: np.ndarray | None = None,
        ratings: np.ndarray | None = None,
        name: str = "interactions",
        num_users: int | None = None,
        num_items: int | None = None,
        already_contiguous: bool = False,
    ) -> Interactions:
        """Builds contiguous ids from raw ids (sorted raw order) or keeps given ids.

        With `already_contiguous=True` the raw ids are taken as 0-based ids
        (the files of NCF, NGCF and LightGCN ship remapped ids), and the
        vocabulary sizes default to `max id + 1`.
        """
        raw_users = np.asarray(raw_users)
        raw_items = np.asarray(raw_items)
        if already_contiguous:
            users = as_int64(raw_users, "user ids")
            items = as_int64(raw_items, "item ids")
            n_users = num_users or (int(users.max()) + 1 if users.size else 0)
            n_items = num_items or (int(items.max()) + 1 if items.size else 0)
            raw_user_vocab = raw_item_vocab = None
        else:
            # Float raw ids (e.g. a pandas column) must be whole numbers too.
            if raw_users.dtype.kind == "f":
                raw_users = as_int64(raw_users, "raw user ids")
            if raw_items.dtype.kind == "f":
                raw_items = as_int64(raw_items, "raw item ids")
            raw_user_vocab, users = np.unique(raw_users, return_inverse=True)
            raw_item_vocab, items = np.unique(raw_items, return_inverse=True)
            n_users, n_items = len(raw_user_vocab), len(raw_item_vocab)
        return cls(
            user_ids=users,
            item_ids=items,
            num_users=n_users,
            num_items=n_items,
            timestamps=timestamps,  # checked and converted by __post_init__
            ratings=None if ratings is None else np.asarray(ratings, np.float32),
            raw_user_ids=raw_user_vocab,
            raw_item_ids=raw_item_vocab,
            name=name,
        )

    def compact(self, users: bool = True) -> Interactions:
        """Drops items (and, if `users`, users) with no rows; renumbers ids."""
        if users:
            users_kept, user_ids = np.unique(self.user_ids, return_inverse=True)
        else:
            users_kept, user_ids = np.arange(self.num_users), self.user_ids
        items_kept, item_ids = np.unique(self.item_ids, return_inverse=True)

        def raw(vocab, kept):
            return kept if vocab is None else vocab[kept]

        return dataclasses.replace(
            self,
            user_ids=user_ids,
            item_ids=item_ids,
            num_users=len(users_kept),
            num_items=len(items_kept),
            raw_user_ids=raw(self.raw_user_ids, users_kept),
            raw_item_ids=raw(self.raw_item_ids, items_kept),
        )

    def filter(
        self,
        min_rating: float | None = None,
        k_core: int | None = None,
        min_user_interactions: int | None = None,
        min_item_interactions: int | None = None,
    ) -> Interactions:
        """Keeps ratings >= `min_rating`; then, in one pass with the counts
        of those, the interactions of users with at least
        `min_user_interactions` and items with at least
        `min_item_interactions` (not repeated: Mult-VAE's `min_uc`, with
        items unfiltered, and SASRec's preprocessing, which drops users and
        items with fewer than 5 actions once); then iterates to a `k_core`
        (users and items with at least k interactions), then renumbers ids
        contiguously."""
        data = self
        if min_rating is not None:
            if data.ratings is None:
                raise ValueError(
                    f"`min_rating={min_rating}` needs ratings, but {data.name} has none"
                )
            data = data.subset(data.ratings >= min_rating)
        if min_user_interactions or min_item_interactions:
            keep = np.ones(len(data.user_ids), bool)
            if min_user_interactions:
                keep &= data.user_counts()[data.user_ids] >= min_user_interactions
            if min_item_interactions:
                keep &= data.item_counts()[data.item_ids] >= min_item_interactions
            data = data.subset(keep)
        if k_core:
            while True:
                user_ok = data.user_counts()[data.user_ids] >= k_core
                item_ok = data.item_counts()[data.item_ids] >= k_core
                keep = user_ok & item_ok
                if keep.all():
                    break
                data = data.subset(keep)
        return data.compact()


def check_feedback_values(matrix: sp.csr_matrix) -> None:
    """Raises `ValueError` if a stored value (duplicates summed) is NaN,
    infinite or negative: implicit feedback is a count or a rating, and a
    NaN or a negative value (a dislike coded -1) must not silently become
    an interaction."""
    data = matrix.data
    bad = ~np.isfinite(data) | (data < 0)
    if bad.any():
        position = int(np.argmax(bad))
        row = int(np.searchsorted(matrix.indptr, position, side="right") - 1)
        raise ValueError(
            f"The interaction matrix holds {int(bad.sum())} NaN, infinite or "
            f"negative values (first: {data[position]} at row {row}, column "
            f"{matrix.indices[position]}); implicit feedback must be counts or "
            "ratings >= 0 (binarise a signed matrix yourself)"
        )


def binary_csr(matrix: sp.spmatrix) -> sp.csr_matrix:
    """A float32 CSR copy of `matrix` with every stored nonzero (a count, a
    rating, repeated entries summed) as 1: the implicit feedback `X` of the
    papers. The caller's matrix is never written to.

    Raises:
        ValueError: a NaN, infinite or negative value (`check_feedback_values`).
    """
    binary = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    binary.sum_duplicates()
    check_feedback_values(binary)
    binary.eliminate_zeros()
    binary.data[:] = 1.0
    binary.sort_indices()
    return binary

"""EASE (Steck, WWW 2019): a closed-form item-item autoencoder."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf
from scipy import linalg
from scipy.linalg import lapack

from keras_rec.data.interactions import Interactions, binary_csr
from keras_rec.layers.zero_diagonal_dense import ZeroDiagonalDense
from keras_rec.models.autoencoder_base import (
    AutoencoderRecommender,
    rows_input,
)
from keras_rec.models.base import check_positive, serialize_config

#: Rows of the item-item matrices handled at once outside LAPACK.
BLOCK = 1024
#: Largest matrix inverted by LAPACK in one call (see `spd_inverse_upper`).
INVERSE_BLOCK = 4096
#: `EASE(precision=...)` values.
PRECISIONS = ("auto", "float64", "float32")


class InsufficientMemoryError(MemoryError, ValueError):
    """The closed form would not fit in memory (raised before allocating).

    Also a `ValueError`, so `train_all.py` reports the run as failed and
    goes on with the next one.
    """


def available_memory() -> int:
    """Bytes this process can still allocate (Linux; best effort elsewhere).

    `MemAvailable` of `/proc/meminfo` (free plus reclaimable cache), capped by
    the cgroup v2 limit of a container; else `os.sysconf` free pages.
    """
    available = None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        with open("/sys/fs/cgroup/memory.current") as handle:
            used = int(handle.read())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available


def closed_form_bytes(num_items: int, itemsize: int = 8) -> int:
    """Peak memory of EASE's fit beyond the model's own `B`: the Gram/inverse
    matrix of `itemsize`-byte floats (one buffer, worked on in place), the
    blocked inverse's panels (three `INVERSE_BLOCK x n` temporaries) and the
    Gram and write-out blocks."""
    panels = 3 * itemsize * num_items * INVERSE_BLOCK
    if num_items <= INVERSE_BLOCK:
        panels = 0
    return itemsize * num_items * num_items + panels + 40 * num_items * BLOCK


def check_memory(needed: int, what: str) -> None:
    """Raises `InsufficientMemoryError` if `needed` bytes are not available."""
    available = available_memory()
    if needed > available:
        raise InsufficientMemoryError(
            f"{what} needs about {needed / 2**30:.1f} GiB but only "
            f"{available / 2**30:.1f} GiB of memory is available (memory an "
            "earlier model in this process freed may still be held by "
            "TensorFlow's allocator: a fresh process may have more)"
        )


def gram_matrix(matrix: sp.spmatrix, dtype=np.float64) -> np.ndarray:
    """Dense `X^T X` of a sparse `X`, one block of columns at a time.

    The sparse product costs `sum_u |x_u|^2` multiply-adds (not `U I^2`), and
    the blocks keep its sparse intermediate at `I x BLOCK` entries.
    """
    columns = sp.csc_matrix(matrix, dtype=dtype)
    transposed = columns.T.tocsr()
    num_items = columns.shape[1]
    gram = np.empty((num_items, num_items), dtype)
    for start in range(0, num_items, BLOCK):
        stop = min(start + BLOCK, num_items)
        gram[:, start:stop] = (transposed @ columns[:, start:stop]).toarray()
    return gram


def ease_inverse(matrix: sp.spmatrix, l2: float, dtype=np.float64) -> np.ndarray:
    """`P = (X^T X + l2 I)^-1` in `dtype`; only its upper triangle is valid.

    `G + l2 I` is symmetric positive definite, so `P = U^-1 U^-T` from its
    Cholesky factor `U` (`spd_inverse_upper`): `n^3` flops, against `2 n^3`
    for an LU inverse and `8/3 n^3` for `np.linalg.inv`.
    """
    num_items = matrix.shape[1]
    gram = gram_matrix(matrix, dtype)
    gram.flat[:: num_items + 1] += l2
    try:
        return spd_inverse_upper(gram)
    except np.linalg.LinAlgError as error:
        raise np.linalg.LinAlgError(
            f"X^T X + l2 I is not positive definite ({error}); increase `l2` "
            f"(received l2={l2})"
        ) from error


def spd_inverse_upper(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix, in place.

    Reads the upper triangle of `matrix` (C-ordered) and leaves the upper
    triangle of the inverse there (the lower one is scratch); no second
    `n x n` matrix is made. Up to `INVERSE_BLOCK` rows: LAPACK `dpotrf` +
    `dpotri` (Cholesky `A = U^T U`, then `U^-1 U^-T`), `n^3` flops against
    `8/3 n^3` for `np.linalg.inv`. Measured by `benchmarks/autoencoders.py`
    on ML-1M's 3,687 items (2 CPU cores, best of 3, Gram matrix included):
    this 1.34 s, the blocked path below 1.92 s, `np.linalg.inv` 3.39 s,
    `tf.linalg.inv` 6.20 s in float64 and 3.47 s in float32 (1e-6 off); on
    the same cores shared with other jobs it was the fastest float64
    inverse in each of three more runs.

    Larger matrices go by blocks of `INVERSE_BLOCK`, in three sweeps of
    `n^3 / 3` flops each (Cholesky, `W = U^-1`, `P = W W^T`): LAPACK only
    ever sees one diagonal block and the rest is matrix products. The reason:
    OpenBLAS's multi-threaded `dpotrf` segfaults on large matrices (here from
    `n = 16,000` with 2 threads, in `scipy.linalg.lapack` and
    `np.linalg.cholesky` alike; OpenBLAS issues #1413 and #2821 trace it to
    its threaded SYRK), and a segfault cannot be caught.
    """
    n = matrix.shape[0]
    # `dpotrf`/`dpotri`/`dtrtri`, or the `s` routines for a float32 matrix.
    potrf, potri, trtri = lapack.get_lapack_funcs(
        ("potrf", "potri", "trtri"), (matrix,)
    )
    if n <= INVERSE_BLOCK:
        # `matrix.T` is the same symmetric matrix, Fortran-ordered: LAPACK
        # works on it in place (passing `matrix` would make f2py copy it).
        factor, info = potrf(matrix.T, lower=False, clean=False, overwrite_a=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"leading minor {info} is not positive")
        inverse, info = potri(factor, lower=False, overwrite_c=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"dpotri failed with info={info}")
        return inverse
    a, block = matrix, INVERSE_BLOCK
    starts = list(range(0, n, block))
    # 1. Cholesky, right-looking: A = U^T U, U upper.
    for k in starts:
        e = min(k + block, n)
        diagonal, info = potrf(a[k:e, k:e], lower=False, clean=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"leading minor {k + info} is not positive")
        a[k:e, k:e] = diagonal
        if e == n:
            break
        a[k:e, e:] = linalg.solve_triangular(diagonal, a[k:e, e:], trans="T")
        for j in range(e, n, block):
            j2 = min(j + block, n)
            a[e:j2, j:j2] -= a[k:e, e:j2].T @ a[k:e, j:j2]
    # 2. W = U^-1, bottom-up: W_IJ = -U_II^-1 sum_{I<K<=J} U_IK W_KJ.
    for i in reversed(starts):
        e = min(i + block, n)
        inverse, _ = trtri(a[i:e, i:e], lower=False)
        for j in reversed(range(e, n, block)):
            j2 = min(j + block, n)
            total = a[i:e, e:j] @ a[e:j, j:j2] + a[i:e, j:j2] @ np.triu(a[j:j2, j:j2])
            a[i:e, j:j2] = -(inverse @ total)
        a[i:e, i:e] = inverse
    # 3. P = W W^T, upper blocks P_IJ = sum_{K>=J} W_IK W_JK^T, I <= J.
    for i in starts:
        e = min(i + block, n)
        for j in range(i, n, block):
            j2 = min(j + block, n)
            left = a[i:e, j:j2] if j > i else np.triu(a[i:e, j:j2])
            total = left @ np.triu(a[j:j2, j:j2]).T
            if j2 < n:
                total += a[i:e, j2:] @ a[j:j2, j2:].T
            a[i:e, j:j2] = total
    return a


def write_weights(upper: np.ndarray, write: Callable[[int, int, np.ndarray], None]):
    """Passes `B = I - P diag(1 / diag(P))` to `write(start, stop, rows)` by
    float32 row blocks, from a `P` of which only the upper triangle is valid.

    `B_ij = -P_ij / P_jj` off the diagonal and `B_ii = 0`.
    """
    num_items = upper.shape[0]
    diagonal = upper.diagonal().copy()
    for start in range(0, num_items, BLOCK):
        stop = min(start + BLOCK, num_items)
        rows = upper[start:stop].copy()
        rows[:, :start] = upper[:start, start:stop].T
        square = rows[:, start:stop]
        rows[:, start:stop] = np.triu(square) + np.triu(square, 1).T
        rows /= -diagonal
        rows[np.arange(stop - start), np.arange(start, stop)] = 0.0
        write(start, stop, rows.astype(np.float32))


def ease_weights(matrix: sp.spmatrix, l2: float, dtype=np.float64) -> np.ndarray:
    """EASE's `B = I - P diag(1 / diag(P))`, `P = (X^T X + l2 I)^-1`, as
    float32; `dtype` is the precision `P` is computed in."""
    weights = np.empty((matrix.shape[1], matrix.shape[1]), np.float32)

    def write(start, stop, rows):
        weights[start:stop] = rows

    write_weights(ease_inverse(matrix, l2, dtype), write)
    return weights


@keras.saving.register_keras_serializable(package="keras_rec")
class EASE(AutoencoderRecommender, keras.Model):
    """Embarrassingly shallow autoencoder: scores `x_u B` with `diag(B) = 0`.

    `B = argmin |X - X B|^2 + l2 |B|^2` subject to `diag(B) = 0`, in closed
    form: `P = (X^T X + l2 I)^-1`, `B = I - P diag(1 / diag(P))`. Fitted with
    `fit_closed_form(train)` (no gradient training); `B` is the
    non-trainable kernel of a `ZeroDiagonalDense` layer, so it is saved with
    the model, and the functional model maps `"rows"` `[B, num_items]` to
    scores `[B, num_items]`.

    Memory: `B` takes `4 I^2` bytes and the fit another `8 I^2` in float64
    (1.6 GB and 3.2 GB at ML-20M's 20,108 items): `B` is written into the
    weight block by block from the in-place Cholesky inverse. Both are
    checked before anything is allocated (`InsufficientMemoryError`, a
    `MemoryError` and a `ValueError`). With `precision="auto"` a fit whose
    float64 inverse would not fit computes it in float32 (`4 I^2`) and warns.
    For Gowalla's 40,981 items the estimates with `B` are 24.1 GiB in float64
    and 16.0 GiB in float32. (A first float32 fit there was killed at 20.8
    GB: writing `B` by `kernel[start:stop].assign` kept a second copy of the
    whole kernel, and every call made a zero-diagonal copy; the fit no longer
    copies `B`, and the Gowalla run peaked at 15.6 GB resident, evaluation
    included.) With TensorFlow's oneDNN optimisations (the default on x86)
    the first call after the fit leaves one more copy of `B` allocated, so
    scoring takes `8 I^2` bytes, less than the fit; and memory a finished
    fit frees stays cached in that allocator, so a second large EASE in the
    same process finds less memory available (seen on Gowalla: refused at
    5.4 GiB free). Run one such fit per process, or set
    `TF_ENABLE_ONEDNN_OPTS=0` before importing TensorFlow: then neither
    happens (measured at 12,000 items).

    Args:
        num_items: int. Size of the item vocabulary.
        l2: float. The L2 weight `lambda` (the paper: ~500 on ML-20M).
        precision: `"float64"`, `"float32"` or `"auto"` (float64 when it
            fits in memory): the precision `P` is computed in. `B` is float32.

    Example:
    >>> model = EASE(num_items=5, l2=10.0)
    >>> train = Interactions([0, 0, 1, 1], [0, 1, 1, 2], num_users=2, num_items=5)
    >>> model.fit_closed_form(train).score_all({"item_history": [[1]]}).shape
    TensorShape([1, 5])

    References:
        Steck, Embarrassingly Shallow Autoencoders for Sparse Data, WWW 2019.
        https://arxiv.org/abs/1905.03375
    """

    closed_form = True

    def __init__(
        self, num_items: int, l2: float = 500.0, precision: str = "auto", **kwargs
    ):
        check_positive(num_items=num_items, l2=l2)
        if precision not in PRECISIONS:
            raise ValueError(
                f"`precision` must be one of {PRECISIONS}. Received "
                f"precision={precision!r}"
            )
        check_memory(4 * num_items * num_items, f"EASE's B for {num_items} items")
        # === Layers ===
        # `B`'s diagonal is written as zero and never trained: "subtract"
        # scores without copying `B` on every call.
        item_item = ZeroDiagonalDense(
            num_items,
            kernel_initializer="zeros",
            trainable=False,
            zeroing="subtract",
            name="item_item",
        )
        # === Functional model ===
        rows = rows_input(num_items)
        scores = item_item(rows)
        super().__init__(inputs=rows, outputs=scores, **kwargs)
        # === Config ===
        self.item_item = item_item
        self.num_items = num_items
        self.l2 = l2
        self.precision = precision

    def fit_closed_form(self, train: Interactions | sp.spmatrix) -> EASE:
        """Sets `B` from the training interactions, or a `[users, items]`
        SciPy matrix, binarised as the paper's `X` (counts or ratings count
        as 1)."""
        matrix = (
            train.to_csr() if isinstance(train, Interactions) else binary_csr(train)
        )
        if matrix.shape[1] != self.num_items:
            raise ValueError(
                f"The training data has {matrix.shape[1]} items but the model "
                f"has num_items={self.num_items}"
            )
        dtype = self._fit_dtype()
        kernel = self.item_item.kernel.value  # the tf.Variable: row writes
        # Under a tf.distribute strategy, every replica's copy is written.
        if isinstance(kernel, tf.distribute.DistributedValues):
            copies = kernel.values
        else:
            copies = (kernel,)

        def write(start, stop, rows):
            # Writes the rows in place: `kernel[start:stop].assign` left a
            # second copy of the whole kernel behind (6.3 GiB at 40,981 items).
            for copy in copies:
                with tf.device(copy.device):
                    tf.raw_ops.ResourceStridedSliceAssign(
                        ref=copy.handle,
                        begin=[start],
                        end=[stop],
                        strides=[1],
                        value=rows,
                    )

        write_weights(ease_inverse(matrix, self.l2, dtype), write)
        return self

    def _fit_dtype(self):
        """The inverse's dtype, after checking that its memory is available."""
        precision = self.precision
        if precision == "auto":
            precision = "float64"
            needed, available = closed_form_bytes(self.num_items), available_memory()
            if needed > available:
                warnings.warn(
                    f"EASE's fit for {self.num_items} items needs about "
                    f"{needed / 2**30:.1f} GiB in float64, more than the "
                    f"{available / 2**30:.1f} GiB available; computing the "
                    "inverse in float32 instead",
                    stacklevel=3,
                )
                precision = "float32"
        dtype = np.dtype(precision)
        check_memory(
            closed_form_bytes(self.num_items, dtype.itemsize),
            f"EASE's fit for {self.num_items} items in {precision}",
        )
        return dtype.type

    def get_config(self):
        return serialize_config(
            self, num_items=self.num_items, l2=self.l2, precision=self.precision
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)

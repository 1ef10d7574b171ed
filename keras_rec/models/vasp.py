"""VASP (Vančura and Kordík, ICANN 2021): FLVAE and Neural EASE trained
jointly, their sigmoid outputs multiplied; and the split-brain augmentation."""

from __future__ import annotations

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from keras_rec.data.pipelines import user_rows_dataset
from keras_rec.layers.zero_diagonal_dense import ZeroDiagonalDense
from keras_rec.models.flvae import FLVAEBase


def split_brain_halves(
    matrix: sp.csr_matrix, rng: np.random.Generator
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Each row's items split at random into two disjoint halves.

    A row with `n` items gets `floor(n / 2)` of them, drawn uniformly, in
    `first` and the other `ceil(n / 2)` in `second` (the authors' code
    shuffles a user's items and cuts at `int(0.5 n)`). Both are binary CSR
    matrices of `matrix`'s shape; `first + second` is the binarised
    `matrix`.
    """
    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()
    lengths = np.diff(matrix.indptr)
    rows = np.repeat(np.arange(matrix.shape[0]), lengths)
    # Sorting by (row, random key) orders each row's items at random.
    order = np.lexsort((rng.random(matrix.nnz), rows))
    rank = np.empty(matrix.nnz, np.int64)
    rank[order] = np.arange(matrix.nnz) - matrix.indptr[rows]
    in_first = rank < (lengths // 2)[rows]

    def part(mask):
        values = np.ones(int(mask.sum()), np.float32)
        return sp.csr_matrix(
            (values, (rows[mask], matrix.indices[mask])), shape=matrix.shape
        )

    return part(in_first), part(~in_first)


def split_brain_dataset(
    matrix: sp.csr_matrix,
    batch_size: int = 2048,
    seed: int = 0,
    epoch: int = 0,
) -> tf.data.Dataset:
    """VASP's augmentation: every user twice, each half predicting the other.

    Each epoch splits every row of `matrix` at random into two halves
    (`split_brain_halves`, re-drawn from `seed` and `epoch`) and yields the
    `2 * num_rows` pairs `(first -> second)` and `(second -> first)`,
    shuffled, as dense `(inputs [B, I], targets [B, I])` float32 batches of
    `batch_size` rows. The model can never win by copying its input, since
    input and target are disjoint.
    """
    first, second = split_brain_halves(matrix, np.random.default_rng([seed, epoch, 1]))
    num_items = matrix.shape[1]
    pairs = sp.vstack(
        [sp.hstack([first, second]), sp.hstack([second, first])], format="csr"
    )
    dataset = user_rows_dataset(pairs, batch_size, seed=seed, epoch=epoch)
    return dataset.map(
        lambda rows, _: (rows[:, :num_items], rows[:, num_items:]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


@keras.saving.register_keras_serializable(package="keras_rec")
class VASP(FLVAEBase):
    """Variational autoencoder with a parallel shallow path (VASP).

    `p(x) = p_vae(x) * sigmoid(x B)`: the Hadamard product of FLVAE's
    output `p_vae = sigmoid(W_d h(z) + b_d) * sigmoid(W_l z + b_l)` (see
    `FLVAE`) and Neural EASE's `sigmoid(x B)` with `diag(B) = 0`
    (`ZeroDiagonalDense`). Both paths are trained jointly on
    `FocalLoss(alpha=0.25, gamma=2)(y, p) + beta * KL / latent_dim`, on the
    split-brain pairs of `split_brain_dataset`. An item scores high only if
    both the deep and the shallow path give it a high probability. The
    paper's ML-20M model has `latent_dim=2048`, `hidden_dim=4096` (a GPU
    size: about 300M weights).

    Args:
        num_items: int. Size of the item vocabulary.
        hidden_dim: int. Width of FLVAE's residual blocks.
        latent_dim: int. Dimension of `z`.
        encoder_layers: int. Layers of FLVAE's encoder block.
        decoder_layers: int. Layers of FLVAE's decoder block.
        beta: float. Weight of the (per-dimension mean) KL term.
        seed: int or None. Seed of the initialisers and the sampling.
        sparse_rows: bool. FLVAE's encoder's first layer and the shallow
            path trained on the rows' nonzeros only (`SparseRowsDense`,
            `ZeroDiagonalDense(sparse_inputs=True)`).
        item_ids: list of int or None. The items both paths read and score
            (the authors' `ease_items_sampling`: their ML-20M model keeps
            the most popular 33%; see `keras_rec.layers.item_subset`); as
            `FLVAE`'s, the others get probability 0 in the outputs and
            `unscored_score` (just above the lowest finite value, which
            excluded items get) from `score_all`. `None`: all items.

    Example:
    >>> model = VASP(num_items=20, hidden_dim=8, latent_dim=4)
    >>> model.score_all({"item_history": [[3, 5, -1]]}).shape
    TensorShape([1, 20])

    References:
        Vančura and Kordík, VASP, ICANN 2021. https://arxiv.org/abs/2102.05774
    """

    def _shallow_path(
        self, num_items: int, seed: int | None, sparse_rows: bool
    ) -> keras.layers.Layer:
        """Neural EASE's `sigmoid(x B)` with `diag(B) = 0`."""
        return ZeroDiagonalDense(
            num_items,
            activation="sigmoid",
            kernel_initializer=keras.initializers.GlorotUniform(
                None if seed is None else seed + 10
            ),
            sparse_inputs=sparse_rows,
            name="ease",
        )

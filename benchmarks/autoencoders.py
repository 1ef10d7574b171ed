"""EASE's closed form and the Mult-VAE / Mult-DAE epochs on ML-1M.

    python benchmarks/autoencoders.py --data-dir ../shared/data [--epochs 2]

On the `strong_generalization` training matrix (600 + 600 held-out users):

* EASE: the Gram matrix `X^T X` (sparse, blockwise) and `B` from
  `P = (X^T X + lambda I)^-1` five ways: ours (`keras_rec.models.ease`,
  LAPACK Cholesky `dpotrf` + `dpotri` in float64), ours by blocks of 1,024
  (the path of matrices over 4,096 items), and the plain formula with
  `np.linalg.inv` (Steck's code), `tf.linalg.inv` in float64 and in
  float32. Each `B` is compared with ours (max |difference|; the float64
  ones must agree within 1e-4). FLOPs: `2 sum_u |x_u|^2` for the Gram matrix,
  LAPACK's counts for the inverse (`n^3` for Cholesky + inverse, `8/3 n^3`
  for `gesv` against the identity, `2 n^3` for LU + inverse).
* Mult-VAE (I-600-200-600-I) and Mult-DAE (I-200-I), batch 500, and
  RecVAE (600/200, 5 layers, batch 500: 3 encoder passes and 1 decoder pass
  per epoch) and FLVAE at the CPU size (600/200, 7 + 5 layers, split-brain
  pairs, batch 2048): seconds per epoch of Keras `fit` after a warm-up
  epoch. FLOPs per epoch count the dense matmuls, `2 * in * out` per layer
  and row, times 3 (forward and backward; RecVAE's frozen old encoder adds
  one forward per row and pass). `--max-rows R` times epochs over the
  first R training rows and scales the seconds to all rows (for Gowalla,
  whose RecVAE epoch takes many minutes here).
* `--sparse-rows`: the first layer (600 units) on batches of the training
  rows, forward and kernel gradient, as `keras.layers.Dense` and as
  `SparseRowsDense` (the product over the nonzeros only), and the epochs of
  Mult-VAE, Mult-DAE, RecVAE and FLVAE both ways (each model dense, then
  sparse, back to back), in one process so that the ratios count.
* `--step-times N`: instead of whole epochs, each model's compiled training
  step (the one `fit` runs) on the first and on the last batch of an epoch,
  mean of N steps after a warm-up, in milliseconds; no input pipeline in the
  timing, so the number varies less than an epoch's. RecVAE's first batch is
  an encoder-phase step, its last a decoder-phase step.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # see keras_rec/__init__.py

import keras
import numpy as np
import tensorflow as tf

import keras_rec  # noqa: F401
from keras_rec.data import load_dataset, make_split
from keras_rec.data.pipelines import user_rows_dataset
from keras_rec.layers.sparse_rows_dense import SparseRowsDense
from keras_rec.losses.focal import FocalLoss
from keras_rec.losses.multinomial import MultinomialLogLikelihood
from keras_rec.models import ease
from keras_rec.models.autoencoder_base import training_rows
from keras_rec.models.ease import ease_weights, gram_matrix
from keras_rec.models.flvae import FLVAE
from keras_rec.models.mult_vae import MultDAE, MultVAE
from keras_rec.models.recvae import RecVAE, alternating_rows_dataset
from keras_rec.models.vasp import split_brain_dataset


def _timed(function, *args, repeats: int = 1):
    """`(result, seconds)`: the fastest of `repeats` calls (the CPU is shared,
    so the first call of a method also pays thread start-up and others' load)."""
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - begin)
    return result, best


def _b_from_inverse(inverse: np.ndarray) -> np.ndarray:
    weights = inverse / -np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights


def _blocked_ease_weights(matrix, l2: float, block: int) -> np.ndarray:
    """Ours with the blocked inverse that matrices over 4,096 items take."""
    saved, ease.INVERSE_BLOCK = ease.INVERSE_BLOCK, block
    try:
        return ease_weights(matrix, l2)
    finally:
        ease.INVERSE_BLOCK = saved


def numpy_ease(matrix, l2: float) -> np.ndarray:
    """Steck's reference formula with `np.linalg.inv`."""
    gram = (matrix.T @ matrix).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    return _b_from_inverse(np.linalg.inv(gram))


def tensorflow_ease(matrix, l2: float, dtype) -> np.ndarray:
    gram = (matrix.T @ matrix).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    inverse = tf.linalg.inv(tf.constant(gram, dtype)).numpy().astype(np.float64)
    return _b_from_inverse(inverse)


def benchmark_ease(matrix, l2: float, repeats: int) -> None:
    num_items = matrix.shape[1]
    lengths = np.diff(matrix.indptr).astype(np.float64)
    gram_flops = 2 * float(np.sum(lengths**2))
    _, seconds = _timed(gram_matrix, matrix, repeats=repeats)
    print(
        f"EASE on {matrix.shape[0]:,} users x {num_items:,} items, "
        f"{matrix.nnz:,} interactions, lambda={l2}"
    )
    print(
        f"  Gram X^T X (sparse, blockwise): {seconds:6.2f} s, "
        f"{gram_flops / 1e9:.2f} GFLOP, {gram_flops / seconds / 1e9:.2f} GFLOP/s"
    )
    ours, ours_seconds = _timed(ease_weights, matrix, l2, repeats=repeats)
    cube = float(num_items) ** 3
    rows = [("ours: dpotrf+dpotri float64", ours, ours_seconds, cube)]
    for label, function, flops in (
        (
            "ours, by blocks of 1024",
            lambda: _blocked_ease_weights(matrix, l2, 1024),
            cube,
        ),
        ("np.linalg.inv float64", lambda: numpy_ease(matrix, l2), 8 / 3 * cube),
        (
            "tf.linalg.inv float64",
            lambda: tensorflow_ease(matrix, l2, tf.float64),
            2 * cube,
        ),
        (
            "tf.linalg.inv float32",
            lambda: tensorflow_ease(matrix, l2, tf.float32),
            2 * cube,
        ),
    ):
        result, seconds = _timed(function, repeats=repeats)
        rows.append((label, result, seconds, flops))
    for label, result, seconds, flops in rows:
        difference = float(np.max(np.abs(result - ours)))
        total = flops + gram_flops
        print(
            f"  {label:28s}: {seconds:6.2f} s (Gram included), "
            f"{total / 1e9:6.1f} GFLOP, {total / seconds / 1e9:6.2f} GFLOP/s; "
            f"max |B - ours| = {difference:.1e}"
        )
        if "float64" in label:
            assert difference < 1e-4, (label, difference)


def dense_flops(widths: list[int]) -> int:
    """Forward multiply-add FLOPs of one row through dense layers `widths`."""
    return sum(2 * a * b for a, b in zip(widths[:-1], widths[1:], strict=True))


def benchmark_first_layer(matrix, batch_size: int, repeats: int) -> None:
    """`Dense` against `SparseRowsDense` on the first batches of `matrix`."""
    rows = tf.constant(matrix[:batch_size].toarray(), tf.float32)
    density = matrix.nnz / (matrix.shape[0] * matrix.shape[1])
    seconds = {}
    for layer in (keras.layers.Dense(600), SparseRowsDense(600)):
        layer.build(rows.shape)

        @tf.function
        def step(layer=layer):
            with tf.GradientTape() as tape:
                total = tf.reduce_sum(tf.tanh(layer(rows, training=True)))
            return tf.convert_to_tensor(tape.gradient(total, layer.kernel))

        step()
        _, seconds[type(layer).__name__] = _timed(
            lambda step=step: step().numpy(), repeats=repeats
        )
    dense, sparse = seconds["Dense"], seconds["SparseRowsDense"]
    # The dense product and the kernel's gradient, 2 * B * items * 600 each
    # (the sparse layer skips most of them: its rate is dense-equivalent).
    flops = 2 * 2 * rows.shape[0] * matrix.shape[1] * 600
    print(
        f"first layer, {batch_size} rows x {matrix.shape[1]:,} items "
        f"({density:.3%} nonzero) -> 600, {flops / 1e9:.2f} GFLOP: "
        f"Dense {dense * 1e3:.1f} ms ({flops / dense / 1e9:.1f} GFLOP/s), "
        f"SparseRowsDense {sparse * 1e3:.1f} ms ({flops / sparse / 1e9:.1f} "
        f"GFLOP/s dense-equivalent; x{dense / sparse:.2f})"
    )


def _labels(name: str, model) -> tuple[str, str]:
    """The printed name and rate unit of `model`'s timings."""
    if not model.sparse_rows:
        return name, "GFLOP/s"
    # The FLOPs count the first layer's dense product, most of which the
    # sparse product skips: a rate comparable with the dense run's.
    return f"{name} (sparse rows)", "GFLOP/s dense-equivalent"


def benchmark_autoencoder(
    name, model, epoch_flops, dataset, matrix, epochs, max_rows=None
) -> None:
    """Seconds per epoch of the compiled `model` on `dataset(rows, epoch)`;
    `epoch_flops` are those of an epoch over all of `matrix`'s rows."""
    rows = matrix if max_rows is None else matrix[:max_rows]
    model.fit(dataset(rows, 0), verbose=0)
    begin = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.fit(dataset(rows, epoch), verbose=0)
    scale = matrix.shape[0] / rows.shape[0]
    seconds = (time.perf_counter() - begin) / epochs * scale
    name, rate = _labels(name, model)
    timed = "" if scale == 1 else f", timed on {rows.shape[0]:,} and scaled"
    print(
        f"{name}: {seconds:7.2f} s/epoch ({matrix.shape[0]:,} users{timed}), "
        f"{epoch_flops / 1e9:.1f} GFLOP/epoch, "
        f"{epoch_flops / seconds / 1e9:.2f} {rate}",
        flush=True,
    )


def benchmark_steps(
    name, model, epoch_flops, dataset, matrix, repeats, max_rows=None
) -> None:
    """Milliseconds per compiled training step of `model` on the first and
    the last batch of `dataset(rows, 0)` (mean of `repeats` after a warm-up).

    The rate divides the FLOPs of the mean step (`epoch_flops`, those of an
    epoch over all of `matrix`'s rows, scaled to `rows` and divided by the
    epoch's steps) by the first batch's time."""
    rows = matrix if max_rows is None else matrix[:max_rows]
    first = last = None
    steps = 0
    for batch in dataset(rows, 0):
        first = batch if first is None else first
        last = batch
        steps += 1
    step_flops = epoch_flops * rows.shape[0] / matrix.shape[0] / steps
    model.fit(dataset(rows[:1], 0), verbose=0)  # builds the model and optimizer
    step = model.make_train_function()
    name, rate = _labels(name, model)
    times = []
    for batch in (first, last):
        iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
        step(iterator)
        begin = time.perf_counter()
        for _ in range(repeats):
            logs = step(iterator)
        tf.nest.map_structure(lambda value: np.asarray(value), logs)
        times.append((time.perf_counter() - begin) / repeats * 1e3)
    print(
        f"{name}: {times[0]:7.1f} ms/step (first batch), "
        f"{times[1]:7.1f} ms/step (last batch); mean step "
        f"{step_flops / 1e9:.2f} GFLOP, {step_flops / times[0] / 1e6:.1f} {rate} "
        "on the first batch",
        flush=True,
    )


def _rows_batches(batch_size):
    return lambda rows, epoch: user_rows_dataset(rows, batch_size, seed=0, epoch=epoch)


def _multinomial(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=MultinomialLogLikelihood()
    )
    return model


def _vae_entries(items: int, batch: int) -> list[tuple]:
    """`(name, build(sparse_rows), FLOPs per row, dataset(rows, epoch))` of
    Mult-VAE, Mult-DAE, RecVAE and FLVAE (CPU size)."""

    def recvae(sparse):
        model = RecVAE(items, seed=0, sparse_rows=sparse)
        model.compile(optimizer=keras.optimizers.Adam(5e-4))
        return model

    def flvae(sparse):
        model = FLVAE(items, hidden_dim=600, latent_dim=200, seed=0, sparse_rows=sparse)
        model.compile(optimizer=keras.optimizers.Nadam(1e-3), loss=FocalLoss())
        return model

    encoder = dense_flops([items, *[600] * 5]) + dense_flops([600, 400])
    flvae_row = (
        dense_flops([items, *[600] * 7])
        + dense_flops([600, 400])
        + dense_flops([200, *[600] * 5, items])
        + dense_flops([200, items])
    )
    return [
        (
            "Mult-VAE",
            lambda sparse: _multinomial(MultVAE(items, seed=0, sparse_rows=sparse)),
            # Encoder I-600-(mu, log_var), decoder z-600-I.
            3 * (dense_flops([items, 600, 400]) + dense_flops([200, 600, items])),
            _rows_batches(batch),
        ),
        (
            "Mult-DAE",
            lambda sparse: _multinomial(MultDAE(items, seed=0, sparse_rows=sparse)),
            3 * dense_flops([items, 200, items]),
            _rows_batches(batch),
        ),
        (
            "RecVAE",
            recvae,
            # 4 passes, each: encoder and decoder forward and backward, and
            # the frozen old encoder's forward.
            4 * (3 * (encoder + dense_flops([200, items])) + encoder),
            lambda rows, epoch: alternating_rows_dataset(rows, batch, 0, epoch),
        ),
        (
            "FLVAE (CPU size)",
            flvae,
            3 * flvae_row * 2,  # split-brain: each user twice
            lambda rows, epoch: split_brain_dataset(rows, 2048, 0, epoch),
        ),
    ]


def _key(name: str) -> str:
    """`--models` key of an entry: "Mult-VAE" -> "mult_vae", "FLVAE (CPU size)" -> "flvae"."""
    return name.split(" ")[0].lower().replace("-", "_")


def benchmark_vaes(matrix, items, args) -> None:
    """Each VAE's epoch; with `--sparse-rows` each one dense then sparse,
    back to back, so that a ratio is measured under the same load."""
    flags = (False, True) if args.sparse_rows else (False,)
    entries = _vae_entries(items, args.batch_size)
    if args.models:
        keys = {_key(entry[0]): entry for entry in entries}
        unknown = sorted(set(args.models) - set(keys))
        if unknown:
            raise SystemExit(
                f"Unknown --models {', '.join(unknown)}; choose from {', '.join(keys)}."
            )
        entries = [keys[key] for key in args.models]
    for name, build, row_flops, dataset in entries:
        for sparse in flags:
            if args.step_times:
                benchmark_steps(
                    name,
                    build(sparse),
                    row_flops * matrix.shape[0],
                    dataset,
                    matrix,
                    args.step_times,
                    args.max_rows,
                )
                continue
            benchmark_autoencoder(
                name,
                build(sparse),
                row_flops * matrix.shape[0],
                dataset,
                matrix,
                args.epochs,
                args.max_rows,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--heldout-users", type=int, default=600)
    parser.add_argument("--l2", type=float, default=500.0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--max-rows",
        type=int,
        help="time epochs over this many training rows, scaled to all rows",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="EASE timings: best of this many"
    )
    parser.add_argument("--skip-ease", action="store_true")
    parser.add_argument("--skip-autoencoders", action="store_true")
    parser.add_argument(
        "--step-times",
        type=int,
        metavar="N",
        help="time N compiled training steps per model instead of epochs",
    )
    parser.add_argument(
        "--models",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        help="comma-separated autoencoders to time (mult_vae, mult_dae, recvae, "
        "flvae); all by default",
    )
    parser.add_argument(
        "--sparse-rows",
        action="store_true",
        help="also time the first layer and the epochs with SparseRowsDense",
    )
    args = parser.parse_args()

    dataset = load_dataset(args.dataset, args.data_dir)
    split = make_split(
        dataset,
        "strong_generalization",
        seed=0,
        num_heldout_users=args.heldout_users,
    )
    matrix = training_rows(split.train)
    items = split.num_items
    if not args.skip_ease:
        benchmark_ease(matrix, args.l2, args.repeats)
    if args.sparse_rows:
        benchmark_first_layer(matrix, args.batch_size, args.repeats)
    if not args.skip_autoencoders:
        benchmark_vaes(matrix, items, args)


if __name__ == "__main__":
    main()

"""SASRec training and evaluation throughput on Amazon Games (paper settings).

    python benchmarks/sasrec.py --data-dir ../shared/data [--steps 100]
        [--bucket-by-length] [--skip-eval]

Times the input pipeline (`sequence_dataset`: padding + negative sampling +
`tf.data`) over one epoch, then Keras `fit` over `--steps` batches after a
warm-up (default: a whole epoch), and reports seconds per epoch and training
sequences per second; then one `loo_sampled` evaluation (101 candidates per
user) and one `loo_full` evaluation (all items) on the test users.

With `--bucket-by-length` it does so for both pipelines in one run, each on
a fresh model: the paper's batches padded to `maxlen` and the length-bucketed
batches cropped to their longest sequence
(`sequence_dataset(..., bucket_by_length=True)`, trained with
`SampledBinaryCrossentropy(normalizer=expected_valid_positions(...))`), then
prints the ratios; the timed steps are split into `--rounds` chunks and the
two pipelines' chunks interleaved, so that the load of a shared machine
weighs on both alike. It also counts the traces of the train step: the same
number for both (Keras traces twice on the first `fit`), not one per width,
since the bucketed element spec has width `None`.

FLOPs count the multiply-adds (x 2) of the forward pass per sequence of
length `L`, the width of its batch (`maxlen` padded, the batch's longest
sequence bucketed), with `d` = hidden_dim and the FFN width `d`: per block
`2 L (4 d^2 + 2 d^2)` for the Q, K, V, output and FFN projections plus
`4 L^2 d` for the attention logits and the weighted sum (the full `L x L`
is computed; the causal mask removes nothing), and `4 L d` for the positive
and negative logits; training is 3x the forward pass. MFLOP/sequence is the
epoch's total (from every batch's real width) over its sequences; GFLOP/s is
that of the timed batches. Full ranking adds `2 d num_items` per user.
Embedding gathers, LayerNorm, softmax and dropout are memory-bound and not
counted.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # see keras_rec/__init__.py

import keras

import keras_rec  # noqa: F401
from keras_rec.data import load_dataset, make_split
from keras_rec.data.pipelines import expected_valid_positions, sequence_dataset
from keras_rec.evaluation import evaluate
from keras_rec.losses.sampled_bce import SampledBinaryCrossentropy
from keras_rec.models.sasrec import SASRec


def forward_flops(length: int, hidden_dim: int, num_blocks: int) -> int:
    """Multiply-adds x 2 of the forward pass and training logits of one
    sequence computed at width `length`."""
    dim = hidden_dim
    block = 2 * length * (4 * dim * dim + 2 * dim * dim) + 4 * length * length * dim
    return num_blocks * block + 4 * length * dim


def matmul_gflops(rows: int, inner: int, cols: int, repeats: int = 20) -> float:
    """Achieved GFLOP/s of a `[rows, inner] x [inner, cols]` float32 matmul."""
    import tensorflow as tf

    left = tf.random.normal((rows, inner))
    right = tf.random.normal((inner, cols))
    product = tf.function(lambda a, b: tf.matmul(a, b))
    product(left, right).numpy()
    begin = time.perf_counter()
    for _ in range(repeats):
        result = product(left, right)
    result.numpy()
    return 2 * rows * inner * cols * repeats / (time.perf_counter() - begin) / 1e9


def train_flops(widths, sizes, hidden_dim: int, num_blocks: int) -> int:
    """Training FLOPs (3x forward) of batches of `sizes` sequences of `widths`."""
    return sum(
        3 * size * forward_flops(int(width), hidden_dim, num_blocks)
        for width, size in zip(widths, sizes, strict=True)
    )


def prepare(split, args, bucket_by_length: bool) -> dict:
    """One pipeline's epoch-0 batches and a fresh, warmed-up model."""
    label = "bucketed" if bucket_by_length else "padded"
    begin = time.perf_counter()
    batches = sequence_dataset(
        split.train,
        args.maxlen,
        args.batch_size,
        epoch=0,
        bucket_by_length=bucket_by_length,
    )
    built = time.perf_counter() - begin
    begin = time.perf_counter()
    shapes = [tuple(x["item_history"].shape) for x, _ in batches]
    iterated = time.perf_counter() - begin
    sizes = [size for size, _ in shapes]
    widths = [width for _, width in shapes]
    print(
        f"{label}: {len(shapes)} batches of {args.batch_size}/epoch, mean "
        f"width {sum(widths) / len(widths):.1f} of {args.maxlen}; input "
        f"pipeline {built:.2f} s to build + {iterated:.2f} s to iterate"
    )
    model = SASRec(
        split.num_items,
        maxlen=args.maxlen,
        hidden_dim=args.hidden_dim,
        num_blocks=args.num_blocks,
        seed=0,
    )
    normalizer = (
        expected_valid_positions(split.train, args.maxlen, args.batch_size)
        if bucket_by_length
        else None
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3, beta_2=0.98),
        loss=SampledBinaryCrossentropy(normalizer=normalizer),
        jit_compile=args.jit_compile,
        steps_per_execution=args.steps_per_execution,
    )
    traces = []
    train_step = model.train_step

    def counted(data):
        traces.append(1)  # Python runs only while the train step is traced
        return train_step(data)

    model.train_step = counted
    begin = time.perf_counter()
    model.fit(batches.take(20), verbose=0)  # warm-up / tracing
    print(f"{label} warm-up (tracing + 20 steps): {time.perf_counter() - begin:.1f} s")
    return {
        "label": label,
        "batches": batches,
        "sizes": sizes,
        "widths": widths,
        "model": model,
        "traces": traces,
        "seconds": 0.0,
    }


def report(run: dict, steps: int, sequences: int, args) -> dict:
    """Prints the train line of a timed run; adds its per-epoch figures."""
    sizes, widths, seconds = run["sizes"], run["widths"], run["seconds"]
    per_second = sum(sizes[:steps]) / seconds
    epoch_flops = train_flops(widths, sizes, args.hidden_dim, args.num_blocks)
    timed_flops = train_flops(
        widths[:steps], sizes[:steps], args.hidden_dim, args.num_blocks
    )
    run["seconds_per_epoch"] = sequences / per_second
    run["flops_per_sequence"] = epoch_flops / sum(sizes)
    print(
        f"train {run['label']}: {run['seconds_per_epoch']:.1f} s/epoch ({steps} "
        f"steps timed, {1000 * seconds / steps:.1f} ms/step), {per_second:,.0f} "
        f"sequences/s, {run['flops_per_sequence'] / 1e6:.2f} MFLOP/sequence, "
        f"{timed_flops / seconds / 1e9:.2f} GFLOP/s, {len(run['traces'])} "
        "train-step trace(s)"
    )
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="games")
    parser.add_argument("--maxlen", type=int, default=50)
    parser.add_argument("--hidden-dim", type=int, default=50)
    parser.add_argument("--num-blocks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, help="timed batches (default: an epoch)")
    parser.add_argument("--jit-compile", action="store_true", help="XLA")
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument(
        "--bucket-by-length",
        action="store_true",
        help="also time length-bucketed, width-cropped batches and compare",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="with --bucket-by-length: the timed steps are split into this many "
        "chunks, the two pipelines' chunks interleaved",
    )
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args()

    rows = args.batch_size * args.maxlen
    print(
        f"machine: matmul {matmul_gflops(2048, 2048, 2048):.1f} GFLOP/s at "
        f"2048^3, {matmul_gflops(rows, args.hidden_dim, args.hidden_dim, 200):.1f} "
        f"GFLOP/s at the model's [{rows}, {args.hidden_dim}] x "
        f"[{args.hidden_dim}, {args.hidden_dim}]"
    )
    dataset = load_dataset(args.dataset, args.data_dir)
    split = make_split(dataset, "loo_sampled", seed=0, num_negatives=100)
    sequences = sum(1 for s in split.train.sequences() if len(s) >= 2)
    print(
        f"{args.dataset}: {sequences:,} training sequences, {split.num_items:,} "
        f"items, {expected_valid_positions(split.train, args.maxlen, 1):.2f} "
        f"non-padding positions per sequence (maxlen {args.maxlen})"
    )
    runs = [prepare(split, args, bucket_by_length=False)]
    if args.bucket_by_length:
        runs.append(prepare(split, args, bucket_by_length=True))
    steps_per_epoch = len(runs[0]["sizes"])
    steps = min(args.steps or steps_per_epoch, steps_per_epoch)
    # Interleaved chunks (ABBA...), so that a change in the machine's load
    # hits both pipelines alike.
    rounds = max(1, min(args.rounds, steps)) if len(runs) > 1 else 1
    bounds = [steps * r // rounds for r in range(rounds + 1)]
    for r in range(rounds):
        for run in runs if r % 2 == 0 else runs[::-1]:
            chunk = run["batches"].skip(bounds[r]).take(bounds[r + 1] - bounds[r])
            begin = time.perf_counter()
            run["model"].fit(chunk, verbose=0)
            run["seconds"] += time.perf_counter() - begin
    for run in runs:
        report(run, steps, sequences, args)
    if args.bucket_by_length:
        padded, bucketed = runs
        print(
            "bucketed vs padded: "
            f"{padded['seconds_per_epoch'] / bucketed['seconds_per_epoch']:.2f}x "
            "faster per epoch, "
            f"{padded['flops_per_sequence'] / bucketed['flops_per_sequence']:.2f}x "
            "fewer FLOPs per sequence"
        )
    model = runs[-1]["model"]
    if args.skip_eval:
        return
    forward = forward_flops(args.maxlen, args.hidden_dim, args.num_blocks)
    for protocol, per_user in (
        ("loo_sampled", forward + 2 * args.hidden_dim * 101),
        ("loo_full", forward + 2 * args.hidden_dim * split.num_items),
    ):
        result = evaluate(model, split.test, protocol)
        users, seconds = result["num_users"], result["seconds"]
        print(
            f"eval {protocol}: {seconds:.1f} s for {users:,} users "
            f"({users / seconds:,.0f} users/s, "
            f"{per_user * users / seconds / 1e9:.2f} GFLOP/s)"
        )


if __name__ == "__main__":
    main()

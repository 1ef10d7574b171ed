"""SASRec training and evaluation throughput on Amazon Games (paper settings).

    python benchmarks/sasrec.py --data-dir ../shared/data [--steps 100]

Times the input pipeline (`sequence_dataset`: padding + negative sampling +
`tf.data`) over one epoch, then Keras `fit` over `--steps` batches after a
warm-up (default: a whole epoch), and reports seconds per epoch and training
sequences per second; then one `loo_sampled` evaluation (101 candidates per
user) and one `loo_full` evaluation (all items) on the test users.

FLOPs count the multiply-adds (x 2) of the forward pass per sequence of
length `L = maxlen`, with `d` = hidden_dim and the FFN width `d`: per block
`2 L (4 d^2 + 2 d^2)` for the Q, K, V, output and FFN projections plus
`4 L^2 d` for the attention logits and the weighted sum (the full `L x L`
is computed; the causal mask removes nothing), and `4 L d` for the positive
and negative logits; training is 3x the forward pass. Full ranking adds
`2 d num_items` per user. Embedding gathers, LayerNorm, softmax and dropout
are memory-bound and not counted.
"""

from __future__ import annotations

import argparse
import time

import keras

import keras_rec  # noqa: F401
from keras_rec.data import load_dataset, make_split
from keras_rec.data.pipelines import sequence_dataset
from keras_rec.evaluation import evaluate
from keras_rec.losses.sampled_bce import SampledBinaryCrossentropy
from keras_rec.models.sasrec import SASRec


def forward_flops(maxlen: int, hidden_dim: int, num_blocks: int) -> int:
    """Multiply-adds x 2 of one sequence's forward pass and training logits."""
    length, dim = maxlen, hidden_dim
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

    begin = time.perf_counter()
    batches = sequence_dataset(split.train, args.maxlen, args.batch_size, epoch=0)
    built = time.perf_counter() - begin
    begin = time.perf_counter()
    steps_per_epoch = sum(1 for _ in batches)
    iterated = time.perf_counter() - begin
    sequences = sum(1 for s in split.train.sequences() if len(s) >= 2)
    print(
        f"{args.dataset}: {sequences:,} training sequences, {split.num_items:,} "
        f"items, {steps_per_epoch} batches of {args.batch_size}/epoch; input "
        f"pipeline {built:.2f} s to build + {iterated:.2f} s to iterate"
    )

    model = SASRec(
        split.num_items,
        maxlen=args.maxlen,
        hidden_dim=args.hidden_dim,
        num_blocks=args.num_blocks,
        seed=0,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3, beta_2=0.98),
        loss=SampledBinaryCrossentropy(),
        jit_compile=args.jit_compile,
        steps_per_execution=args.steps_per_execution,
    )
    begin = time.perf_counter()
    model.fit(batches.take(20), verbose=0)  # warm-up / tracing
    print(f"warm-up (tracing + 20 steps): {time.perf_counter() - begin:.1f} s")
    steps = min(args.steps or steps_per_epoch, steps_per_epoch)
    begin = time.perf_counter()
    model.fit(batches.take(steps), verbose=0)
    seconds = time.perf_counter() - begin
    per_second = steps * args.batch_size / seconds
    flops = 3 * forward_flops(args.maxlen, args.hidden_dim, args.num_blocks)
    print(
        f"train: {sequences / per_second:.1f} s/epoch ({steps} steps timed, "
        f"{1000 * seconds / steps:.1f} ms/step), {per_second:,.0f} sequences/s, "
        f"{flops / 1e6:.2f} MFLOP/sequence, {flops * per_second / 1e9:.2f} GFLOP/s"
    )
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

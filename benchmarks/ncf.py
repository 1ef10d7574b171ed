"""NCF training throughput on ML-1M: GMF, MLP, NeuMF and the input pipeline.

    python benchmarks/ncf.py --data-dir ../shared/data [--factors 64] [--steps 2000] [--xla]

With `--xla` it also times the configs' setting (XLA, 50 steps per call),
with and without the weight averaging (`use_ema`) of the GMF and MLP entries.

For each model it times `--steps` training steps of Keras `fit` (batch 256,
4 negatives per positive, as the paper) after a warm-up, and extrapolates to
a whole epoch (994,169 positives x 5 = 4.97M examples). The input pipeline
(negative sampling + `tf.data` batching) is timed alone over a whole epoch,
so one can see it is not the bottleneck. FLOPs per example count the
multiply-adds of the forward pass (2 per MAC) times 3 for forward + backward.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # see keras_rec/__init__.py

import keras

import keras_rec  # noqa: F401
from keras_rec.configs.ncf import STEPS_PER_EXECUTION, ema_momentum
from keras_rec.data import load_dataset, pointwise_dataset
from keras_rec.models.ncf import GMF, MLP, NeuMF, _tower_widths


def forward_flops(name: str, factors: int, num_layers: int = 3) -> int:
    """Multiply-adds x 2 of one example's forward pass (embeddings are gathers)."""
    widths = _tower_widths(factors, num_layers)
    mlp = 0
    width_in = widths[0]  # two embeddings of widths[0] / 2 each (paper §4.1)
    for width in widths:
        mlp += 2 * width_in * width
        width_in = width
    gmf = factors + 2 * factors  # product, then the output layer
    if name == "gmf":
        return gmf
    if name == "mlp":
        return mlp + 2 * widths[-1]
    return factors + mlp + 2 * (factors + widths[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="ncf-ml-1m")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument(
        "--xla",
        action="store_true",
        help="also time the configs' setting: XLA and 50 steps per execution",
    )
    args = parser.parse_args()

    train = load_dataset(args.dataset, args.data_dir).interactions
    examples = len(train) * 5

    begin = time.perf_counter()
    dataset = pointwise_dataset(train, 4, args.batch_size, seed=0, epoch=0)
    built = time.perf_counter() - begin
    begin = time.perf_counter()
    for _ in dataset:
        pass
    iterated = time.perf_counter() - begin
    print(
        f"input pipeline: {examples:,} examples/epoch; sampling+building "
        f"{built:.2f} s, iterating {iterated:.2f} s -> "
        f"{examples / (built + iterated):,.0f} examples/s"
    )

    # The entries' averaging horizon: 5 epochs of steps, counted as they are.
    momentum = ema_momentum(train, 5, 4, args.batch_size)
    settings = [("eager steps", {}, False)]
    if args.xla:
        xla = {"jit_compile": True, "steps_per_execution": STEPS_PER_EXECUTION}
        # The entries' GMF and MLP also average their weights (`use_ema`).
        settings += [("XLA x50", xla, False), ("XLA x50 EMA", xla, True)]
    for name, cls in (("gmf", GMF), ("mlp", MLP), ("neumf", NeuMF)):
        for label, options, ema in settings:
            model = cls(train.num_users, train.num_items, args.factors, seed=0)
            model.compile(
                optimizer=keras.optimizers.Adam(
                    1e-3, use_ema=ema, ema_momentum=momentum
                ),
                loss="binary_crossentropy",
                **options,
            )
            model.fit(dataset.take(100), verbose=0)  # warm-up / tracing
            begin = time.perf_counter()
            model.fit(dataset.take(args.steps), verbose=0)
            seconds = time.perf_counter() - begin
            per_second = args.steps * args.batch_size / seconds
            flops = 3 * forward_flops(name, args.factors)
            print(
                f"{name:6s} {label:12s}: {examples / per_second:7.1f} s/epoch "
                f"(from {args.steps} steps), {per_second:,.0f} examples/s, "
                f"{flops:,} FLOP/example, {flops * per_second / 1e9:.2f} GFLOP/s"
            )


if __name__ == "__main__":
    main()

"""One worker of the two-process MultiWorkerMirroredStrategy test.

Launched by `tests/training/test_distributed.py` with `TF_CONFIG` set. Trains
a small BPR-MF on synthetic data with `distributed_train` and writes the
initial and final weights and the losses to `--out` (an `.npz`).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_rec.data.pipelines import bpr_dataset  # noqa: E402
from keras_rec.data.synthetic import make_synthetic  # noqa: E402
from keras_rec.losses.bpr import BPRLoss  # noqa: E402
from keras_rec.models.bpr_mf import BPRMF  # noqa: E402
from keras_rec.training.distributed import (  # noqa: E402
    build_in_scope,
    distributed_train,
    is_chief,
    make_strategy,
)

NUM_USERS = 60
NUM_ITEMS = 40


def build(seed: int, l2: float, learning_rate: float):
    """A compiled BPR-MF and its Adam optimizer (call inside the scope)."""
    model = BPRMF(NUM_USERS, NUM_ITEMS, embedding_dim=8, l2=l2, seed=seed)
    optimizer = keras.optimizers.Adam(learning_rate)
    model.compile(optimizer=optimizer, loss=BPRLoss())
    return model, optimizer


def train(strategy, args) -> dict:
    """Trains as the test describes; the arrays the test reads."""
    model, optimizer = build_in_scope(
        strategy, lambda: build(args.seed, args.l2, args.learning_rate)
    )
    initial = [w.numpy().copy() for w in model.weights]
    data = make_synthetic(num_users=NUM_USERS, num_items=NUM_ITEMS, seed=args.seed)
    losses = distributed_train(
        model,
        lambda epoch: bpr_dataset(
            data, batch_size=args.global_batch_size, seed=args.seed, epoch=epoch
        ),
        strategy,
        optimizer,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        global_batch_size=args.global_batch_size,
    )
    arrays = {"losses": np.asarray(losses)}
    for index, (before, weight) in enumerate(zip(initial, model.weights, strict=True)):
        arrays[f"initial_{index}"] = before
        arrays[f"final_{index}"] = weight.numpy()
    return arrays


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--global-batch-size", type=int, default=64)
    parser.add_argument("--l2", type=float, default=1e-2)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    # Two processes share two cores: keep TensorFlow's thread pools small.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    # Created first: it blocks until both workers are up.
    strategy = make_strategy("multi_worker")
    arrays = train(strategy, args)
    arrays["chief"] = np.asarray(is_chief(strategy))
    temporary = args.out + ".tmp.npz"
    np.savez(temporary, **arrays)
    os.replace(temporary, args.out)
    print(f"worker done: {args.out}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

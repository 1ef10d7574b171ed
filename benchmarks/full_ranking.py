"""Full-ranking evaluation and BPR-MF training throughput vs the machine's matmul.

    python benchmarks/full_ranking.py --dataset gowalla --data-dir ../shared/data

Prints, for BPR-MF (d=64) on the dataset:
* one BPR training epoch: seconds, triples/s, FLOPs and GFLOP/s;
* full-ranking evaluation over every test user: seconds, FLOPs of the score
  matmul (2 * users * items * d) and GFLOP/s;
* the same matmul alone (`tf.matmul` of the same shapes, batched the same
  way) as the machine's reference, and the ratio of the two.
Times are a ratio in one run: absolute seconds drift from run to run here.
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
from keras_rec.data import bpr_dataset, load_dataset, make_split
from keras_rec.evaluation import evaluate
from keras_rec.losses import BPRLoss
from keras_rec.models import BPRMF


def _matmul_reference(users: int, items: int, dim: int, batch: int) -> float:
    left = tf.random.normal([batch, dim])
    right = tf.random.normal([items, dim])

    @tf.function
    def step(a):
        return tf.math.top_k(tf.matmul(a, right, transpose_b=True), k=20).indices

    step(left)
    begin = time.perf_counter()
    for _ in range(0, users, batch):
        step(left).numpy()
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data-dir")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2048)
    args = parser.parse_args()

    dataset = load_dataset(args.dataset, args.data_dir)
    split = make_split(dataset, "holdout_full", seed=0)
    users, items, dim = len(split.test), split.num_items, args.dim
    model = BPRMF(split.num_users, items, dim, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=BPRLoss())

    model.fit(bpr_dataset(split.train, args.batch_size, epoch=0), verbose=0)
    begin = time.perf_counter()
    data = bpr_dataset(split.train, args.batch_size, epoch=1)
    pipeline = time.perf_counter() - begin
    begin = time.perf_counter()
    model.fit(data, verbose=0)
    epoch = time.perf_counter() - begin
    triples = len(split.train)
    # forward: 2 dot products of d per triple (2*2d); backward about twice that.
    train_flops = triples * 3 * 4 * dim
    print(
        f"BPR-MF epoch: {epoch:.2f} s (+{pipeline:.2f} s building the pipeline), "
        f"{triples / epoch:,.0f} triples/s, {train_flops / 1e9:.2f} GFLOP, "
        f"{train_flops / epoch / 1e9:.2f} GFLOP/s"
    )

    evaluate(model, split.test.take(np.arange(min(64, users))), "holdout_full")
    begin = time.perf_counter()
    result = evaluate(model, split.test, "holdout_full")
    seconds = time.perf_counter() - begin
    flops = 2.0 * users * items * dim
    reference = _matmul_reference(users, items, dim, 1024)
    print(
        f"full ranking of {users:,} users x {items:,} items: {seconds:.2f} s, "
        f"{flops / 1e9:.1f} GFLOP, {flops / seconds / 1e9:.1f} GFLOP/s "
        f"(recall@20 {result['recall@20']:.4f})"
    )
    print(
        f"reference tf.matmul + top_k alone: {reference:.2f} s, "
        f"{flops / reference / 1e9:.1f} GFLOP/s; evaluation / reference = "
        f"{seconds / reference:.2f}x"
    )


if __name__ == "__main__":
    main()

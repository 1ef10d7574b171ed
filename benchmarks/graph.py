"""NGCF and LightGCN on Gowalla: training epoch, one propagation, full ranking.

    python benchmarks/graph.py --data-dir ../shared/data [--steps 20] [--models ngcf]

For each model with the paper's hyperparameters (LightGCN: d=64, 3 layers,
batch 2048; NGCF: d=64, layers 64-64-64, batch 1024, node and message
dropout 0.1), on the `holdout_full` split:

* **one sparse product** `L E` (d=64) with TensorFlow's CSR kernel (what
  the layers use) and with `tf.sparse.sparse_dense_matmul`, each also
  transposed (the backward pass of an asymmetric `L`, as under NGCF's node
  dropout): the kernel's `adjoint_a` mode (what TensorFlow's gradient
  runs) and a plain product by the converted transpose (what the layers
  run, the conversion shared by the step's layers).
* **one full propagation** (inference mode, all 70,839 nodes): the time of
  `encoder.propagate()` inside a `tf.function`, best of 5. FLOPs: `2 nnz d`
  per sparse product (one per layer); NGCF adds `2 * 2 n d_in d_out` for its
  two dense transforms per layer.
* **seconds per epoch**: Keras `fit` on `--steps` BPR batches after a warm-up
  step, extrapolated to the epoch's `ceil(810,128 / batch)` steps (stated
  as such in the output). FLOPs per step: forward + backward = 2x the
  sparse products (the backward pass needs `L^T g`, not the gradient of
  the constant values) and 3x the dense ones, the last layer's at the
  batch's distinct users and items only (the rows a training step
  computes it at: its sparse product over their rows of `L`, its dense
  ones at those rows; the means over the timed batches).
* **full-ranking evaluation** over all 29,858 test users
  (`keras_rec.evaluation.evaluate`, `holdout_full`) with the cached final
  embeddings fresh: scoring (with its cache check), masking, top-20, metrics.
  FLOPs: `2 * users * items * d'` of the score matmul.

Each line gives wall seconds and the process's CPU seconds (all threads):
on a CPU shared with other jobs the wall time grows with their load while
the CPU time stays near the uncontended cost. GFLOP/s are per wall second.
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # see keras_rec/__init__.py

import keras
import numpy as np
import tensorflow as tf

import keras_rec  # noqa: F401
from keras_rec.data import bpr_dataset, load_dataset, make_split
from keras_rec.evaluation import evaluate
from keras_rec.layers.graph_propagation import CSRAdjacency
from keras_rec.losses import BPRLoss
from keras_rec.models.lightgcn import LightGCN
from keras_rec.models.ngcf import NGCF
from keras_rec.training.results import onednn_enabled

SETTINGS = {
    "lightgcn": {"batch": 2048, "lr": 1e-3},
    "ngcf": {"batch": 1024, "lr": 1e-4},
}


def build(name: str, split) -> keras.Model:
    if name == "lightgcn":
        model = LightGCN(
            split.num_users, split.num_items, 64, num_layers=3, l2=1e-4,
            seed=0, interactions=split.train,
        )  # fmt: skip
    else:
        model = NGCF(
            split.num_users, split.num_items, 64, layer_sizes=[64, 64, 64],
            node_dropout=0.1, message_dropout=0.1, l2=1e-5, seed=0,
            interactions=split.train,
        )  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(SETTINGS[name]["lr"]), loss=BPRLoss())
    return model


def propagation_flops(model, last=None) -> tuple[float, float]:
    """`(sparse, dense)` FLOPs of one forward propagation; with `last`, a
    `(rows, nonzeros)` pair, the last layer's sparse product over that many
    nonzeros and its dense transforms at that many rows (a training step's
    distinct batch nodes and their rows of `L`) instead of the whole graph."""
    encoder = model.encoder
    nonzeros, nodes = 2 * encoder.num_edges, encoder.num_nodes
    sparse, dense, dim = 0.0, 0.0, encoder.embedding_dim
    for k, layer in enumerate(encoder.propagation):
        at_rows = k == len(encoder.propagation) - 1 and last is not None
        sparse += 2.0 * (last[1] if at_rows else nonzeros) * dim
        units = getattr(layer, "units", None)
        if units is not None:
            dense += 2 * 2.0 * (last[0] if at_rows else nodes) * dim * units
            dim = units
    return sparse, dense


def batch_rows(batch: dict, num_users: int, degrees: np.ndarray) -> tuple[int, int]:
    """The distinct users and items of a BPR batch (the rows at which a
    training step computes the last layer) and their nonzeros in `L`
    (`degrees`: each node's nonzeros)."""
    users = np.unique(batch["user_id"].numpy())
    items = np.unique(batch["item_ids"].numpy()) + num_users
    return len(users) + len(items), int(degrees[users].sum() + degrees[items].sum())


def timed(function, repeats: int = 1) -> tuple[float, float]:
    """`(wall, cpu)` seconds of the fastest of `repeats` calls."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def report(label: str, times: tuple[float, float], flops: float, note="") -> None:
    wall, cpu = times
    print(
        f"  {label:30s} {wall:9.3f} s wall {cpu:9.3f} s CPU {flops / 1e9:9.2f} GFLOP"
        f" {flops / wall / 1e9:6.2f} GFLOP/s {note}",
        flush=True,
    )


def kernels(model) -> None:
    """One `L E` (d=64) with the CSR kernel and with `sparse_dense_matmul`."""
    adjacency = model.encoder.adjacency()
    embeddings = tf.random.normal([model.encoder.num_nodes, 64])
    flops = 2.0 * 2 * model.encoder.num_edges * 64
    variants = {
        "CSR SparseMatrixMatMul": ("matrix", {}),
        "CSR SparseMatrixMatMul, L^T": ("matrix", {"adjoint_a": True}),
        "  ..., transpose converted": ("transposed", {}),
    }
    for label, (operand, options) in variants.items():

        def product(operand=operand, options=options):
            matrix = getattr(CSRAdjacency(adjacency), operand)
            return tf.raw_ops.SparseMatrixMatMul(a=matrix, b=embeddings, **options)

        function = tf.function(product)
        function()
        report(label, timed(function, 5), flops, "(incl. CSR conversion)")
    for label, adjoint in (("sparse_dense_matmul", False), ("  ..., L^T", True)):
        function = tf.function(
            lambda adjoint=adjoint: tf.sparse.sparse_dense_matmul(
                adjacency, embeddings, adjoint_a=adjoint
            )
        )
        function()
        report(label, timed(function, 3), flops)


def run(name: str, split, steps: int, evaluation: bool) -> None:
    model = build(name, split)
    batch = SETTINGS[name]["batch"]
    sparse, dense = propagation_flops(model)
    print(f"{name}: batch {batch}, {2 * model.encoder.num_edges:,} nonzeros")

    propagate = tf.function(lambda: model.encoder.propagate(training=False))
    propagate()
    report("one propagation (inference)", timed(propagate, 5), sparse + dense)

    steps_per_epoch = math.ceil(len(split.train) / batch)
    data = bpr_dataset(split.train, batch, seed=0, epoch=0)
    model.fit(data.take(1), verbose=0)  # traces the train step
    timed_batches = data.skip(1).take(steps)
    wall, cpu = timed(lambda: model.fit(timed_batches, verbose=0))
    encoder = model.encoder
    degrees = np.bincount(
        encoder.adjacency_indices.numpy()[:, 0], minlength=encoder.num_nodes
    )
    rows, nonzeros = np.mean(
        [batch_rows(x, encoder.num_users, degrees) for x, *_ in timed_batches], 0
    )
    sparse, dense = propagation_flops(model, (rows, nonzeros))
    step_flops = 2 * sparse + 3 * dense
    report("training step", (wall / steps, cpu / steps), step_flops)
    report(
        f"epoch ({steps_per_epoch} steps)",
        (wall / steps * steps_per_epoch, cpu / steps * steps_per_epoch),
        step_flops * steps_per_epoch,
        f"(extrapolated from {steps} steps)",
    )
    if evaluation:
        model.cache_embeddings()
        metrics = {}
        times = timed(
            lambda: metrics.update(evaluate(model, split.test, "holdout_full"))
        )
        dim = model.encoder.output_dim
        flops = 2.0 * len(split.test) * split.num_items * dim
        report(
            f"full ranking, {len(split.test):,} users",
            times,
            flops,
            f"(recall@20 {metrics['recall@20']:.4f} after {steps + 1} steps)",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="gowalla")
    parser.add_argument("--models", default="lightgcn,ngcf")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-evaluation", action="store_true")
    args = parser.parse_args()
    split = make_split(load_dataset(args.dataset, args.data_dir), "holdout_full", 0)
    print(
        f"{args.dataset}: {split.num_users:,} users, {split.num_items:,} items, "
        f"{len(split.train):,} training pairs; "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads, "
        f"oneDNN {'on' if onednn_enabled() else 'off'}"
    )
    print("one sparse product L E, d=64:")
    kernels(build("lightgcn", split))
    for name in args.models.split(","):
        run(name.strip(), split, args.steps, not args.no_evaluation)


if __name__ == "__main__":
    main()

"""Scale-out training: `tf.distribute` strategies and a custom training loop.

Three ways to train, chosen by name with `make_strategy`:

* `None` / `"none"`: no strategy; plain Keras `fit` in one process.
* `"mirrored"`: `tf.distribute.MirroredStrategy` over the local GPUs. Keras
  `fit` works there, and so does `distributed_train`.
* `"multi_worker"`: `tf.distribute.MultiWorkerMirroredStrategy` across
  processes or machines, described by the `TF_CONFIG` environment variable.
  Keras 3 `fit` fails under it (keras-team/keras#20585), so
  `distributed_train` (or `DistributedEpoch`, one epoch at a time) is a
  custom loop: a `tf.function` step run by `strategy.run`.

Under a strategy, the model (its weights), its `compile(...)` and the
optimizer must be created inside `strategy.scope()` (`build_in_scope` does
that), so that every variable is mirrored over the replicas. This includes a
model loaded from a checkpoint. A `MultiWorkerMirroredStrategy` must be
created before any other TensorFlow op runs in the process.

Loss scaling. Inside a replica, Keras 3 already scales a loss for
distribution: `compute_loss` returns the compiled loss (the mean over the
replica's batch) and the `model.losses` times `1 / num_replicas_in_sync`, and
the Keras optimizer sums the gradients over the replicas. Every replica gets
exactly `global_batch_size / num_replicas` examples here, so
`mean_replica / num_replicas = sum_replica / global_batch_size`, which is
`tf.nn.compute_average_loss(per_example, global_batch_size)`, and the summed
gradient is the gradient of the mean over the global batch: the gradient of a
single-replica run on the same batches (and the one `fit` computes under
`MirroredStrategy`). The loop therefore takes `model.compute_loss(...)` as it
is and does not divide it again (that would shrink the gradient N-fold). A
term that a model adds in its own `compute_loss` must be scaled the same way
(divided by `tf.distribute.get_strategy().num_replicas_in_sync`), or it is
`num_replicas` times too strong under any multi-replica strategy, `fit`
included. The loss reported is the sum over replicas of that scaled loss,
i.e. the mean over the global batch.

Equal steps on every worker. The gradient all-reduce needs every worker to
take the same number of steps, with no replica left without data. Every
worker therefore builds the whole epoch's data (the `keras_rec.data`
pipelines are deterministic in their seed and epoch, so the data is the same
on every worker), regroups it into full global batches (the last partial one
is dropped: a pipeline reshuffles every epoch, so a different remainder is
dropped each time), splits each global batch into one equal slice per
replica and keeps its own slices (`input_context.input_pipeline_id`). So
every worker sees only its shard, and all take `rows // global_batch_size`
steps; the step counts are compared across workers before each epoch.
"""

from __future__ import annotations

import json
import math
import os
import weakref
from collections.abc import Callable

import keras
import tensorflow as tf

STRATEGIES = ("none", "mirrored", "multi_worker")


def make_strategy(name: str | None) -> tf.distribute.Strategy | None:
    """The `tf.distribute` strategy called `name`.

    Args:
        name: str or None. `None` or `"none"` (no strategy), `"mirrored"`
            (`MirroredStrategy` over the local GPUs, or the CPU without one)
            or `"multi_worker"` (`MultiWorkerMirroredStrategy` from
            `TF_CONFIG`; create it before any other TensorFlow op runs, and
            note that it blocks until every worker of the cluster is up).

    Returns:
        The strategy, or `None` for none.

    Raises:
        ValueError: `name` is unknown, or `TF_CONFIG` is missing or malformed
            for `"multi_worker"`.
        RuntimeError: `"multi_worker"` was asked for after TensorFlow ran ops.
    """
    key = "none" if name is None else str(name).lower()
    if key == "none":
        return None
    if key == "mirrored":
        return tf.distribute.MirroredStrategy()
    if key == "multi_worker":
        _check_tf_config(os.environ.get("TF_CONFIG"))
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            raise RuntimeError(
                "Create the multi_worker strategy before any other TensorFlow "
                "op runs in the process (first thing in `main`, before any "
                f"dataset or model): {error}"
            ) from error
    raise ValueError(
        f"Unknown strategy. Expected one of {STRATEGIES} or None. "
        f"Received: name={name!r}"
    )


def _check_tf_config(raw: str | None) -> None:
    example = (
        '{"cluster": {"worker": ["host0:port", "host1:port"]}, '
        '"task": {"type": "worker", "index": 0}}'
    )
    if not raw:
        raise ValueError(
            "The multi_worker strategy reads the cluster from the TF_CONFIG "
            f"environment variable, which is not set. Set it on every worker, "
            f"e.g. TF_CONFIG='{example}'"
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {raw!r}") from error
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not any(
        isinstance(cluster.get(kind), list) and cluster[kind]
        for kind in ("chief", "worker")
    ):
        raise ValueError(
            "TF_CONFIG needs a `cluster` with a non-empty `worker` (or `chief`) "
            f"list of 'host:port' addresses, e.g. {example}. Received: {raw!r}"
        )
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ValueError(
            "TF_CONFIG needs a `task` whose `type` is a job of the cluster "
            f"({sorted(cluster)}), e.g. {example}. Received: {raw!r}"
        )
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise ValueError(
            f"TF_CONFIG `task.index` must be an int in [0, "
            f"{len(cluster[task['type']])}). Received: {raw!r}"
        )


def build_in_scope(strategy: tf.distribute.Strategy | None, builder: Callable):
    """Calls `builder()` inside `strategy.scope()` (directly for no strategy).

    Build the model, `compile` it and create the optimizer in `builder`, e.g.
    `build_in_scope(strategy, lambda: (make_model(), keras.optimizers.Adam()))`.

    Args:
        strategy: tf.distribute.Strategy or None. The strategy.
        builder: callable. Takes no argument; its result is returned.
    """
    if strategy is None:
        return builder()
    with strategy.scope():
        return builder()


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether this process should write files (checkpoints, results).

    True without a strategy, for a single-worker one, and on the chief (or
    worker 0 without a chief) of a multi-worker cluster.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster or resolver.task_type is None:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in cluster
    )


def any_worker(strategy: tf.distribute.Strategy | None, flag: bool) -> bool:
    """Whether `flag` is true on any worker: a decision all workers share.

    Use it for decisions that may differ between workers (a time budget), so
    that all of them stop together rather than leave the others waiting in
    an all-reduce.
    """
    strategy = strategy or tf.distribute.get_strategy()
    return _sum_over_replicas(strategy, float(flag)) > 0


def _sum_over_replicas(strategy: tf.distribute.Strategy, value: float) -> float:
    return float(_replica_sum(strategy)(tf.constant(value, tf.float32)))


#: Each strategy's traced all-reduce sum, dropped with the strategy.
_REPLICA_SUMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _replica_sum(strategy: tf.distribute.Strategy):
    """The all-reduce sum of a scalar, traced once per strategy (a new
    `tf.function` each call retraced every time, and TensorFlow warned)."""
    if strategy not in _REPLICA_SUMS:
        reference = weakref.ref(strategy)  # the cache must not keep it alive

        @tf.function
        def total(tensor):
            owner = reference()
            per_replica = owner.run(tf.identity, args=(tensor,))
            return owner.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        _REPLICA_SUMS[strategy] = total
    return _REPLICA_SUMS[strategy]


class DistributedEpoch:
    """One epoch of training under a strategy; a `fit_epoch` for the trainer.

    `DistributedEpoch(strategy, global_batch_size)(model, dataset, epoch)`
    trains on `dataset` (batches of any size, the same data on every worker)
    in full global batches split evenly over the replicas (see the module
    docstring) and returns the mean loss of the epoch. The train step is
    traced once per (model, optimizer) pair and reused across epochs.

    Args:
        strategy: tf.distribute.Strategy or None. `None` uses the default
            (single-replica) strategy.
        global_batch_size: int. Examples per step over all replicas; a
            multiple of `strategy.num_replicas_in_sync`.
        steps_per_epoch: int or None. At most this many steps per epoch;
            `None` for every full global batch of the epoch's data.
        optimizer: keras.optimizers.Optimizer or None. Created under
            `strategy.scope()`; `None` uses `model.optimizer` (from `compile`).
    """

    def __init__(
        self,
        strategy: tf.distribute.Strategy | None,
        global_batch_size: int,
        steps_per_epoch: int | None = None,
        optimizer: keras.optimizers.Optimizer | None = None,
    ):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.global_batch_size = global_batch_size
        self.steps_per_epoch = steps_per_epoch
        self.optimizer = optimizer
        replicas = self.strategy.num_replicas_in_sync
        if global_batch_size <= 0 or global_batch_size % replicas:
            raise ValueError(
                "`global_batch_size` must be a positive multiple of the "
                f"{replicas} replicas. Received: global_batch_size="
                f"{global_batch_size}"
            )
        if steps_per_epoch is not None and steps_per_epoch <= 0:
            raise ValueError(
                "`steps_per_epoch` must be positive. Received: "
                f"steps_per_epoch={steps_per_epoch}"
            )
        self._step = None
        self._step_key = None

    def __call__(
        self, model: keras.Model, dataset: tf.data.Dataset, epoch: int
    ) -> float:
        optimizer = self.optimizer or model.optimizer
        if optimizer is None:
            raise ValueError("Pass an `optimizer` or compile the model with one.")
        if self._step_key != (id(model), id(optimizer)):
            self._check_scope(model, optimizer)
            self._step = self._make_step(model, optimizer)
            self._step_key = (id(model), id(optimizer))
        batches = dataset.rebatch(self.global_batch_size, drop_remainder=True)
        if self.steps_per_epoch is not None:
            batches = batches.take(self.steps_per_epoch)
        # One cheap pass to count the steps (at most `steps_per_epoch`).
        steps = int(batches.reduce(0, lambda count, _: count + 1))
        replicas = self.strategy.num_replicas_in_sync
        if _sum_over_replicas(self.strategy, steps) != steps * replicas:
            raise ValueError(
                f"Epoch {epoch + 1}: the workers have different numbers of steps "
                f"(this one {steps}); `dataset` must be the same on every worker."
            )
        if steps == 0:
            raise ValueError(
                f"Epoch {epoch + 1}: the data holds no full global batch of "
                f"{self.global_batch_size} rows."
            )
        per_replica = self.global_batch_size // replicas

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            slices = batches.rebatch(per_replica)
            slices = slices.shard(
                context.num_input_pipelines, context.input_pipeline_id
            )
            return slices.prefetch(tf.data.AUTOTUNE)

        iterator = iter(self.strategy.distribute_datasets_from_function(dataset_fn))
        total = 0.0
        for step in range(steps):
            loss = float(self._step(iterator))
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"The training loss became {loss} in epoch {epoch + 1}, "
                    f"step {step + 1} of {steps}."
                )
            total += loss
        return total / steps

    def _check_scope(self, model: keras.Model, optimizer) -> None:
        extended = self.strategy.extended
        if not all(extended.variable_created_in_scope(v.value) for v in model.weights):
            raise ValueError(
                "The model's weights were not created under this strategy's "
                "scope. Build (or load) and compile the model inside "
                "`strategy.scope()`, e.g. with `build_in_scope(strategy, builder)`."
            )
        with self.strategy.scope():
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
        if not extended.variable_created_in_scope(optimizer.iterations.value):
            raise ValueError(
                "The optimizer was built outside this strategy's scope. Create "
                "it inside `strategy.scope()`, e.g. with `build_in_scope`."
            )

    def _make_step(self, model: keras.Model, optimizer) -> Callable:
        strategy = self.strategy

        def replica_step(data):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            variables = model.trainable_variables
            with tf.GradientTape() as tape:
                y_pred = model(x, training=True)
                # Already scaled by 1 / num_replicas by Keras (module docstring).
                loss = model.compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
                )
                scaled = optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, variables)
            if all(gradient is None for gradient in gradients):
                raise ValueError(
                    "The loss does not depend on any trainable weight; compile "
                    "the model with its loss (inside `strategy.scope()`)."
                )
            optimizer.apply_gradients(zip(gradients, variables, strict=True))
            return loss

        @tf.function
        def step(iterator):
            losses = strategy.run(replica_step, args=(next(iterator),))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

        return step


def distributed_train(
    model: keras.Model,
    dataset_fn: Callable[[int], tf.data.Dataset],
    strategy: tf.distribute.Strategy | None,
    optimizer: keras.optimizers.Optimizer | None = None,
    epochs: int = 1,
    steps_per_epoch: int | None = None,
    global_batch_size: int = 2048,
    on_epoch_end: Callable[[int, float], bool | None] | None = None,
    verbose: bool = False,
) -> list[float]:
    """Trains `model` with a custom `strategy.run` loop; the per-epoch losses.

    The model (compiled with its loss) and the optimizer must have been
    created inside `strategy.scope()` (see `build_in_scope`). Each step calls
    the model's own `compute_loss(x, y, y_pred)`, so model-specific terms
    (BPR-MF's L2) are included; see the module docstring for the loss scaling
    and for how every worker takes the same number of steps.

    Args:
        model: keras.Model. The model, compiled with its loss.
        dataset_fn: callable. `epoch -> tf.data.Dataset` of `(x, y)` batches
            of that epoch, e.g. `lambda epoch: bpr_dataset(train,
            batch_size=global_batch_size, seed=seed, epoch=epoch)`. It must
            give the same data on every worker (deterministic in the epoch).
        strategy: tf.distribute.Strategy or None. `None` uses the default
            (single-replica) strategy.
        optimizer: keras.optimizers.Optimizer or None. `None` uses
            `model.optimizer`.
        epochs: int. Number of epochs.
        steps_per_epoch: int or None. At most this many steps per epoch;
            `None` for every full global batch of the epoch's data.
        global_batch_size: int. Examples per step over all replicas.
        on_epoch_end: callable or None. Called as `on_epoch_end(epoch, loss)`
            after each epoch; training stops when it returns True. Under
            several workers it must decide the same on all of them.
        verbose: bool. Print the loss of each epoch.

    Returns:
        The mean training loss of each epoch.

    Raises:
        FloatingPointError: the loss became NaN or infinite (naming the epoch
            and step).
    """
    run_epoch = DistributedEpoch(
        strategy, global_batch_size, steps_per_epoch, optimizer
    )
    losses = []
    for epoch in range(epochs):
        loss = run_epoch(model, dataset_fn(epoch), epoch)
        losses.append(loss)
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}: loss {loss:.6f}", flush=True)
        if on_epoch_end is not None and on_epoch_end(epoch, loss):
            break
    return losses

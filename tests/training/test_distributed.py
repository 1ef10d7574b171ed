"""Tests of the scale-out path: strategies by name and the custom loop."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rec.data.pipelines import bpr_dataset
from keras_rec.data.synthetic import make_synthetic
from keras_rec.losses.bpr import BPRLoss
from keras_rec.models.bpr_mf import BPRMF
from keras_rec.training.distributed import (
    DistributedEpoch,
    any_worker,
    build_in_scope,
    distributed_train,
    is_chief,
    make_strategy,
)

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_worker.py")
TIMEOUT = 240


def load_worker():
    spec = importlib.util.spec_from_file_location("_distributed_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled_bpr_mf(l2: float = 1e-4, learning_rate: float = 0.05):
    model = BPRMF(60, 40, embedding_dim=8, l2=l2, seed=3)
    optimizer = keras.optimizers.Adam(learning_rate)
    model.compile(optimizer=optimizer, loss=BPRLoss())
    return model, optimizer


# === make_strategy ===


@pytest.mark.parametrize("name", [None, "none", "None"])
def test_make_strategy_none(name):
    assert make_strategy(name) is None


def test_make_strategy_mirrored():
    strategy = make_strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert is_chief(strategy)


def test_make_strategy_unknown_name():
    with pytest.raises(ValueError, match="mirrored.*multi_worker.*horovod"):
        make_strategy("horovod")


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "TF_CONFIG environment variable, which is not set"),
        ("{not json", "not valid JSON"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), "`cluster`"),
        (json.dumps({"cluster": {"worker": []}}), "`cluster`"),
        (json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}}), "`task`"),
        (
            json.dumps(
                {
                    "cluster": {"worker": ["127.0.0.1:1"]},
                    "task": {"type": "worker", "index": 1},
                }
            ),
            "task.index",
        ),
    ],
)
def test_make_strategy_multi_worker_needs_tf_config(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        make_strategy("multi_worker")


def test_make_strategy_multi_worker_after_other_ops(monkeypatch):
    # TensorFlow has run ops in this process, so collectives can no longer be
    # configured; this fails before any server starts.
    tf.constant(1.0).numpy()
    config = {
        "cluster": {"worker": [f"127.0.0.1:{free_ports(1)[0]}"]},
        "task": {"type": "worker", "index": 0},
    }
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    with pytest.raises(RuntimeError, match="before any other TensorFlow op"):
        make_strategy("multi_worker")


# === The custom loop in one process ===


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(num_users=60, num_items=40, seed=0)


@pytest.mark.parametrize("mirrored", [False, True])
def test_distributed_train_reduces_loss(synthetic, mirrored):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"]) if mirrored else None
    model, optimizer = build_in_scope(strategy, compiled_bpr_mf)
    seen = []
    losses = distributed_train(
        model,
        lambda epoch: bpr_dataset(synthetic, batch_size=128, seed=0, epoch=epoch),
        strategy,
        optimizer,
        epochs=6,
        global_batch_size=128,
        on_epoch_end=lambda epoch, loss: seen.append((epoch, loss)),
    )
    assert len(losses) == 6 and np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.05
    assert seen == list(enumerate(losses))
    # Every full global batch is used; the partial one is dropped.
    assert int(optimizer.iterations.numpy()) == 6 * (len(synthetic) // 128)


def test_distributed_train_stops_when_asked(synthetic):
    model, optimizer = compiled_bpr_mf()
    losses = distributed_train(
        model,
        lambda epoch: bpr_dataset(synthetic, batch_size=64, seed=0, epoch=epoch),
        None,
        epochs=5,
        steps_per_epoch=2,
        global_batch_size=64,
        on_epoch_end=lambda epoch, loss: epoch == 1,
    )
    assert len(losses) == 2
    assert int(optimizer.iterations.numpy()) == 4


def test_distributed_epoch_drops_the_partial_global_batch():
    model, optimizer = compiled_bpr_mf()
    rows = 10
    features = {
        "user_id": np.arange(rows, dtype=np.int64),
        "item_ids": np.stack([np.arange(rows), np.arange(rows) + 20], 1),
    }
    # Batched by 3, regrouped into global batches of 4: 2 steps, 2 rows dropped.
    dataset = tf.data.Dataset.from_tensor_slices(
        (features, np.zeros(rows, np.float32))
    ).batch(3)
    loss = DistributedEpoch(None, global_batch_size=4)(model, dataset, epoch=0)
    assert np.isfinite(loss)
    assert int(optimizer.iterations.numpy()) == 2


def test_distributed_train_raises_on_nan(synthetic):
    model, optimizer = compiled_bpr_mf(l2=float("nan"))
    with pytest.raises(FloatingPointError, match="epoch 1, step 1 of 2"):
        distributed_train(
            model,
            lambda epoch: bpr_dataset(synthetic, batch_size=32, seed=0, epoch=epoch),
            None,
            optimizer,
            steps_per_epoch=2,
            global_batch_size=32,
        )


def test_weights_built_outside_the_scope_raise(synthetic):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    model, optimizer = compiled_bpr_mf()
    with pytest.raises(ValueError, match="strategy.scope"):
        distributed_train(
            model,
            lambda epoch: bpr_dataset(synthetic, batch_size=32, seed=0, epoch=epoch),
            strategy,
            optimizer,
            global_batch_size=32,
        )


def test_invalid_global_batch_size():
    with pytest.raises(ValueError, match="global_batch_size=0"):
        DistributedEpoch(None, global_batch_size=0)


def test_single_process_helpers():
    assert is_chief(None)
    assert any_worker(None, True)
    assert not any_worker(None, False)


# === Two worker processes under MultiWorkerMirroredStrategy ===


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports on 127.0.0.1 (held open together)."""
    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            handle.bind(("127.0.0.1", 0))
            sockets.append(handle)
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def worker_environment(ports: list[int], index: int) -> dict:
    environment = {
        key: value
        for key, value in os.environ.items()
        # gRPC would send even 127.0.0.1 through a configured proxy.
        if key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy")
    }
    environment.update(
        TF_CONFIG=json.dumps(
            {
                "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                "task": {"type": "worker", "index": index},
            }
        ),
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="2",
        KERAS_BACKEND="tensorflow",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONPATH=os.pathsep.join(
            [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        ),
    )
    return environment


def run_workers(tmp_path: Path, arguments: list[str], count: int = 2) -> list[Path]:
    """Runs `count` workers to completion; fails with their logs otherwise."""
    ports = free_ports(count)
    outputs = [tmp_path / f"worker{index}.npz" for index in range(count)]
    logs = [tmp_path / f"worker{index}.log" for index in range(count)]
    processes = []
    try:
        for index in range(count):
            with open(logs[index], "wb") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, str(WORKER), "--out", str(outputs[index])]
                        + arguments,
                        cwd=ROOT,
                        env=worker_environment(ports, index),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + TIMEOUT
        codes = []
        for process in processes:
            try:
                codes.append(
                    process.wait(timeout=max(1.0, deadline - time.monotonic()))
                )
            except subprocess.TimeoutExpired:
                codes.append(f"timed out after {TIMEOUT} s")
                break
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    if codes != [0] * count:
        report = "\n".join(
            f"--- worker {index} ({codes[index] if index < len(codes) else 'killed'}):"
            f"\n{logs[index].read_text(errors='replace')[-6000:]}"
            for index in range(count)
        )
        pytest.fail(f"the workers failed: {codes}\n{report}")
    return outputs


def test_two_workers_train_in_sync(tmp_path):
    arguments = ["--seed", "0", "--epochs", "2", "--steps", "4"]
    outputs = run_workers(tmp_path, arguments + ["--global-batch-size", "64"])
    first, second = (dict(np.load(path)) for path in outputs)
    assert bool(first["chief"]) and not bool(second["chief"])
    finals = sorted(key for key in first if key.startswith("final_"))
    assert finals, "no weights were written"
    for key in finals:
        # Both workers end with the same weights, moved from the start.
        np.testing.assert_allclose(first[key], second[key], atol=1e-6, rtol=0)
        initial = first[key.replace("final_", "initial_")]
        assert np.abs(first[key] - initial).max() > 1e-3
    assert np.all(np.isfinite(first["losses"])) and len(first["losses"]) == 2
    np.testing.assert_allclose(first["losses"], second["losses"], rtol=1e-6)

    # Each worker saw half of each global batch, and the gradients were
    # summed with the loss scaled by 1 / 2: a single-replica run on the same
    # global batches gives the same weights.
    worker = load_worker()
    reference = worker.train(None, worker.parse(["--out", "unused"] + arguments))
    for key in finals:
        np.testing.assert_allclose(first[key], reference[key], atol=1e-5, rtol=0)
    np.testing.assert_allclose(first["losses"], reference["losses"], rtol=1e-5)


@pytest.mark.large
def test_train_all_on_two_workers_with_pretrained_parts_and_force(tmp_path):
    # `train_all.py --strategy multi_worker` end to end (about 2-4 minutes
    # on 2 cores, so not in the default run: `pytest -m large`). NeuMF
    # trains its GMF and MLP parts under the strategy; `--force` redoes
    # the finished runs, the chief removing their checkpoints while the
    # other worker waits at the barrier. Both workers print the same
    # metrics, and only the chief writes.
    folders = {name: tmp_path / name for name in ("results", "checkpoints")}
    command = [
        sys.executable,
        str(ROOT / "train_all.py"),
        "--strategy",
        "multi_worker",
        "--models",
        "gmf,mlp,neumf",
        "--epochs",
        "1",
        "--no-xla",
        "--no-export",
        "--quiet",
        "--results-dir",
        str(folders["results"]),
        "--checkpoints-dir",
        str(folders["checkpoints"]),
    ]

    def run(*extra) -> list[list[str]]:
        ports = free_ports(2)
        logs = [tmp_path / f"worker{index}.log" for index in range(2)]
        processes = []
        for index in range(2):
            with open(logs[index], "wb") as log:
                processes.append(
                    subprocess.Popen(
                        [*command, *extra],
                        cwd=tmp_path,
                        env=worker_environment(ports, index),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        try:
            codes = [process.wait(timeout=2 * TIMEOUT) for process in processes]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
        texts = [log.read_text(errors="replace") for log in logs]
        assert codes == [0, 0], "\n".join(text[-4000:] for text in texts)
        return [
            [line for line in text.splitlines() if "hr@10=" in line] for text in texts
        ]

    first = run()
    assert len(first[0]) == 3 and first[0] == first[1]
    records = {
        path.name: path.stat().st_mtime_ns for path in folders["results"].glob("*.json")
    }
    assert set(records) == {
        f"{name}_synthetic_seed0.json" for name in ("gmf", "mlp", "neumf")
    }
    again = run("--force")
    assert len(again[0]) == 3 and again[0] == again[1]
    for name, stamp in records.items():
        assert (folders["results"] / name).stat().st_mtime_ns > stamp


def test_the_replica_sum_is_traced_once_per_strategy_and_dropped_with_it():
    import gc
    import weakref

    from keras_rec.training import distributed

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert any_worker(strategy, True) and not any_worker(strategy, False)
    total = distributed._replica_sum(strategy)
    assert total.experimental_get_tracing_count() == 1
    alive = weakref.ref(strategy)
    del strategy, total
    gc.collect()
    assert alive() is None  # the cache did not keep it

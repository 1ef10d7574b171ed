import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rec.data import bpr_dataset, make_synthetic
from keras_rec.losses import BPRLoss
from keras_rec.models import BPRMF
from keras_rec.training.trainer import MODEL_FILE, STATE_FILE, train_model


@pytest.fixture(scope="module")
def train():
    return make_synthetic(num_users=60, num_items=40, mean_length=10, seed=3)


def _model(train, learning_rate=1e-2):
    model = BPRMF(train.num_users, train.num_items, 8, l2=1e-4, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=BPRLoss())
    return model


def _data(train):
    return lambda epoch: bpr_dataset(train, 64, seed=0, epoch=epoch)


def test_loss_goes_down_and_curve_is_recorded(train):
    calls = []

    def evaluate(model):
        calls.append(1)
        return {"score": float(len(calls))}

    result = train_model(
        _model(train),
        _data(train),
        6,
        evaluate=evaluate,
        eval_every=2,
        monitor="score",
        progress=False,
    )
    assert result.epochs_run == 6
    assert result.losses[-1] < result.losses[0]
    assert [p["epoch"] for p in result.curve] == [2, 4, 6]


def test_resume_after_interruption_matches_uninterrupted_run(train, tmp_path):
    reference = train_model(_model(train), _data(train), 4, progress=False).model

    def interrupted(epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return _data(train)(epoch)

    checkpoints = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train_model(
            _model(train), interrupted, 4, checkpoint_dir=checkpoints, progress=False
        )
    with open(os.path.join(checkpoints, STATE_FILE)) as handle:
        assert json.load(handle)["epoch"] == 2
    resumed = train_model(
        _model(train), _data(train), 4, checkpoint_dir=checkpoints, progress=False
    )
    assert resumed.resumed_from == 2
    assert resumed.epochs_run == 4
    for ours, theirs in zip(resumed.model.weights, reference.weights, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)


def test_nan_loss_raises_and_keeps_last_good_checkpoint(train, tmp_path):
    checkpoints = str(tmp_path / "run")
    train_model(
        _model(train), _data(train), 1, checkpoint_dir=checkpoints, progress=False
    )
    model_path = os.path.join(checkpoints, MODEL_FILE)
    before = os.path.getmtime(model_path)
    good = [w.numpy() for w in keras.saving.load_model(model_path).weights]

    def nan_epoch(model, dataset, epoch):
        return float("nan")

    with pytest.raises(FloatingPointError, match="epoch 2"):
        train_model(
            _model(train),
            _data(train),
            3,
            checkpoint_dir=checkpoints,
            fit_epoch=nan_epoch,
            progress=False,
        )
    assert os.path.getmtime(model_path) == before
    restored = keras.saving.load_model(model_path)
    for ours, theirs in zip(restored.weights, good, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs)


def test_nan_weights_are_caught_in_keras_fit(train):
    model = _model(train)
    model.user_embedding.embeddings.assign(
        np.full(model.user_embedding.embeddings.shape, np.nan, np.float32)
    )
    with pytest.raises(FloatingPointError, match="nan"):
        train_model(model, _data(train), 2, progress=False)


def test_time_budget_stops_before_next_epoch(train):
    result = train_model(
        _model(train), _data(train), 50, time_budget=0.0, progress=False
    )
    assert result.stopped_by == "time_budget"
    assert result.epochs_run == 0


def test_evaluate_first_keeps_the_starting_weights_when_they_are_best(train):
    model = _model(train, learning_rate=0.5)
    start = [w.numpy() for w in model.weights]
    scores = iter([1.0, 0.5, 0.4, 0.3])
    result = train_model(
        model,
        _data(train),
        10,
        evaluate=lambda m: {"score": next(scores)},
        monitor="score",
        patience=2,
        evaluate_first=True,
        progress=False,
    )
    assert [p["epoch"] for p in result.curve] == [0, 1, 2]
    assert result.best == {"epoch": 0, "value": 1.0}
    assert result.stopped_by == "patience" and result.epochs_run == 2
    for ours, theirs in zip(result.model.weights, start, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs)


def test_patience_counts_the_saved_curve_when_resuming(train, tmp_path):
    checkpoints = str(tmp_path / "run")
    scores = iter([0.9, 0.5, 0.4])
    first = train_model(
        _model(train),
        _data(train),
        3,
        checkpoint_dir=checkpoints,
        evaluate=lambda m: {"score": next(scores)},
        monitor="score",
        patience=2,
        progress=False,
    )
    assert first.stopped_by == "epochs" and first.best["epoch"] == 1
    # Two evaluations since the best are already saved: a resumed run with
    # more epochs stops at once, with the best epoch's weights.
    resumed = train_model(
        _model(train),
        _data(train),
        10,
        checkpoint_dir=checkpoints,
        evaluate=lambda m: pytest.fail("no epoch should run"),
        monitor="score",
        patience=2,
        progress=False,
    )
    assert resumed.stopped_by == "patience" and resumed.epochs_run == 3
    assert resumed.best == {"epoch": 1, "value": 0.9}


def test_unknown_monitor_is_named(train):
    with pytest.raises(KeyError, match="hr@10"):
        train_model(
            _model(train),
            _data(train),
            1,
            evaluate=lambda m: {"score": 1.0},
            monitor="hr@10",
            progress=False,
        )


# --- Polyak averaging (an optimizer with use_ema=True) -------------------------


def _ema_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.8)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _ema_data(epoch=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], "float32"))[:, None]
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def _weights(model):
    return [w.numpy() for w in model.trainable_variables]


def test_ema_optimizer_trains_as_one_long_fit():
    # One fit over 3 epochs: training goes on from the raw weights and the
    # moving averages are written into the model at the end.
    reference = _ema_model()
    reference.fit(_ema_data(), epochs=3, verbose=0, shuffle=False)
    seen = []

    def evaluate(model):
        seen.append(_weights(model))
        return {"score": 0.0}

    result = train_model(_ema_model(), _ema_data, 3, evaluate=evaluate, progress=False)
    for ours, theirs, evaluated in zip(
        _weights(result.model), _weights(reference), seen[-1], strict=True
    ):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
        np.testing.assert_array_equal(evaluated, ours)  # evaluated on averages


def test_ema_optimizer_keeps_the_averaged_best_weights():
    seen = []

    def evaluate(model):
        seen.append(_weights(model))
        return {"score": -float(len(seen))}  # the first evaluation is the best

    result = train_model(
        _ema_model(), _ema_data, 3, evaluate=evaluate, monitor="score", progress=False
    )
    assert result.best["epoch"] == 1
    raw_after_one_epoch = _ema_model()
    raw_after_one_epoch.fit(_ema_data(), epochs=1, verbose=0, shuffle=False)
    for ours, best in zip(_weights(result.model), seen[0], strict=True):
        np.testing.assert_array_equal(ours, best)
    # Those are the averages after one epoch, not the raw weights.
    for ours, averaged in zip(
        _weights(result.model), _weights(raw_after_one_epoch), strict=True
    ):
        np.testing.assert_allclose(ours, averaged, rtol=1e-6)


def test_ema_optimizer_resumes_with_its_averages(tmp_path):
    reference = train_model(_ema_model(), _ema_data, 4, progress=False).model

    def interrupted(epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return _ema_data()

    checkpoints = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train_model(
            _ema_model(), interrupted, 4, checkpoint_dir=checkpoints, progress=False
        )
    resumed = train_model(
        _ema_model(), _ema_data, 4, checkpoint_dir=checkpoints, progress=False
    )
    assert resumed.resumed_from == 2
    for ours, theirs in zip(_weights(resumed.model), _weights(reference), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5)

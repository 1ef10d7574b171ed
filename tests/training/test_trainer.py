import itertools
import json
import os
import shutil
import types
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rec.data import bpr_dataset, make_synthetic
from keras_rec.losses import BPRLoss
from keras_rec.models import BPRMF
from keras_rec.training import trainer
from keras_rec.training.trainer import (
    CONFIG_KEY,
    MODEL_FILE,
    STATE_FILE,
    train_model,
    training_config,
)


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


def test_a_best_weights_file_removed_while_training_is_an_error(train, tmp_path):
    checkpoints = str(tmp_path / "ckpt")
    scores = iter([1.0, 0.5, 0.4])

    def evaluate(model):
        score = next(scores)
        if score < 1.0:  # after epoch 1 was kept as the best, remove its file
            for name in os.listdir(checkpoints):
                if name.startswith("best"):
                    os.remove(os.path.join(checkpoints, name))
        return {"score": score}

    with pytest.raises(FileNotFoundError, match="best epoch's weights"):
        train_model(
            _model(train),
            _data(train),
            3,
            checkpoint_dir=checkpoints,
            evaluate=evaluate,
            monitor="score",
            progress=False,
        )


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


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_resumed_model_compiles_its_step_as_the_caller_asks(
    train, tmp_path, jit_compile
):
    # `train_all.py --no-xla` sets `jit_compile` on the model it passes in;
    # a resumed run trains the checkpoint's model, which must take it over.
    checkpoints = str(tmp_path / "run")
    # The checkpoint's compile config says the other way.
    first = BPRMF(train.num_users, train.num_items, 8, l2=1e-4, seed=0)
    first.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=BPRLoss(),
        jit_compile=not jit_compile,
    )
    train_model(first, _data(train), 1, checkpoint_dir=checkpoints, progress=False)
    model = _model(train)
    model.jit_compile = jit_compile
    resumed = train_model(
        model, _data(train), 2, checkpoint_dir=checkpoints, progress=False
    )
    assert resumed.resumed_from == 1
    assert resumed.model is not model and resumed.model.jit_compile is jit_compile


def test_resuming_with_other_settings_is_refused(train, tmp_path):
    checkpoints = str(tmp_path / "run")
    settings = {"hyperparameters": {"batch_size": 64}, "patience": None}

    def run(epochs, **options):
        return _train_on(train, checkpoints, epochs, **options)

    run(1, settings=settings)
    assert _state(checkpoints)["settings"] == settings
    other = {"hyperparameters": {"batch_size": 32}, "patience": None}
    with pytest.raises(ValueError, match=r"hyperparameters.batch_size \(64 -> 32\)"):
        run(2, settings=other)
    assert _state(checkpoints)["epoch"] == 1  # nothing trained or rewritten
    # The same settings go on; a checkpoint that records none takes them.
    assert run(2, settings=settings).epochs_run == 2
    state = _state(checkpoints)
    del state["settings"]
    with open(os.path.join(checkpoints, STATE_FILE), "w") as handle:
        json.dump(state, handle)
    assert run(3, settings=other).epochs_run == 3
    assert _state(checkpoints)["settings"] == other


def test_a_checkpoint_another_process_trains_from_is_refused(train, tmp_path):
    fcntl = pytest.importorskip("fcntl")  # no lock without it (Windows)
    checkpoints = tmp_path / "run"
    _train_on(train, str(checkpoints), 1)
    before = (checkpoints / STATE_FILE).read_bytes()
    # Another process holds the lock: a second open file description's
    # flock conflicts with it as another process's would.
    with open(checkpoints / ".lock", "a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.seek(0)
        assert holder.read().strip() == str(os.getpid())  # the last run's
        holder.truncate(0)
        holder.write("4242\n")
        holder.flush()
        with pytest.raises(trainer.CheckpointInUseError, match=r"pid 4242"):
            _train_on(train, str(checkpoints), 2)
        fcntl.flock(holder, fcntl.LOCK_UN)
    assert (checkpoints / STATE_FILE).read_bytes() == before
    # Released (and after each run): training goes on.
    assert _train_on(train, str(checkpoints), 2).resumed_from == 1
    assert _train_on(train, str(checkpoints), 3).resumed_from == 2


def _files(checkpoints) -> list[str]:
    """The checkpoint's files, sorted, but for the training lock."""
    return sorted(set(os.listdir(checkpoints)) - {trainer.LOCK_FILE})


def _state(checkpoints):
    with open(os.path.join(checkpoints, STATE_FILE)) as handle:
        return json.load(handle)


def _checkpoint_model(checkpoints):
    """The model file the checkpoint's `state.json` names."""
    return os.path.join(checkpoints, _state(checkpoints)["model_file"])


def test_a_kill_between_the_model_and_the_state_write_loses_nothing(
    train, tmp_path, monkeypatch
):
    # The model of epoch 2 is written, its state.json is not: the resumed
    # run goes on from epoch 1's model (not epoch 2's, which would train
    # epoch 2 twice) and ends with the uninterrupted run's weights.
    reference = train_model(_model(train), _data(train), 3, progress=False).model
    checkpoints = str(tmp_path / "run")
    write = trainer.atomic_write_json
    writes = []

    def killed_at_the_second(path, value):
        writes.append(path)
        if len(writes) == 2:
            raise KeyboardInterrupt
        write(path, value)

    monkeypatch.setattr(trainer, "atomic_write_json", killed_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        train_model(
            _model(train), _data(train), 3, checkpoint_dir=checkpoints, progress=False
        )
    monkeypatch.setattr(trainer, "atomic_write_json", write)
    assert _state(checkpoints)["epoch"] == 1
    assert os.path.isdir(os.path.join(checkpoints, "model-00002"))
    # What a kill inside the write itself leaves (now, and before 2026-12-07):
    # removed with the other files no state names.
    for leftover in (f".{STATE_FILE}.k1ll3d.tmp", f"{STATE_FILE}.tmp"):
        with open(os.path.join(checkpoints, leftover), "w") as handle:
            handle.write('{"epoch": ')
    _assert_resumes_from_epoch_1(train, checkpoints, reference, epochs=3)


def _assert_resumes_from_epoch_1(train, checkpoints, reference, epochs):
    """Resumes the run in `checkpoints` (at epoch 1) to `epochs`: the
    weights equal `reference`'s and only the last epoch's files remain."""
    resumed = train_model(
        _model(train), _data(train), epochs, checkpoint_dir=checkpoints, progress=False
    )
    assert resumed.resumed_from == 1 and resumed.epochs_run == epochs
    for ours, theirs in zip(resumed.model.weights, reference.weights, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)
    assert _files(checkpoints) == [f"model-{epochs:05d}", STATE_FILE]


def test_a_checkpoint_of_the_older_layout_resumes(train, tmp_path):
    # Before state.json named its model file, it was always `model.keras`.
    checkpoints = str(tmp_path / "run")
    train_model(
        _model(train), _data(train), 1, checkpoint_dir=checkpoints, progress=False
    )
    _zip(_checkpoint_model(checkpoints), os.path.join(checkpoints, MODEL_FILE))
    for key in ("model_file", "seed_states", "train_seconds", "monitor"):
        _edit_state(checkpoints, lambda state, key=key: state.pop(key))
    resumed = train_model(
        _model(train), _data(train), 2, checkpoint_dir=checkpoints, progress=False
    )
    assert resumed.resumed_from == 1 and resumed.epochs_run == 2
    assert _files(checkpoints) == ["model-00002", STATE_FILE]


def _zip(model_dir, path):
    """Rewrites a checkpoint's unzipped model as the `.keras` archive that
    checkpoints held before 2026-11-29."""
    keras.saving.load_model(model_dir).save(path)
    shutil.rmtree(model_dir)


def test_a_zipped_checkpoint_resumes_to_the_same_weights(train, tmp_path):
    # Checkpoints written before the unzipped format name `model-<epoch>.keras`;
    # temporary files of interrupted writes beside it are removed.
    reference = train_model(_model(train), _data(train), 2, progress=False).model
    checkpoints = str(tmp_path / "run")
    train_model(
        _model(train), _data(train), 1, checkpoint_dir=checkpoints, progress=False
    )
    _zip(_checkpoint_model(checkpoints), os.path.join(checkpoints, "model-00001.keras"))
    _edit_state(checkpoints, lambda state: state.update(model_file="model-00001.keras"))
    # Interrupted writes of either format, which no save would overwrite:
    os.mkdir(os.path.join(checkpoints, "model-00000.tmp"))
    open(os.path.join(checkpoints, "model-00000.keras.tmp.keras"), "w").close()
    _assert_resumes_from_epoch_1(train, checkpoints, reference, epochs=2)


def test_a_missing_model_file_is_named(train, tmp_path):
    checkpoints = str(tmp_path / "run")
    train_model(
        _model(train), _data(train), 1, checkpoint_dir=checkpoints, progress=False
    )
    shutil.rmtree(_checkpoint_model(checkpoints))
    with pytest.raises(ValueError, match="model-00001 is missing"):
        train_model(
            _model(train), _data(train), 2, checkpoint_dir=checkpoints, progress=False
        )


def _dropout_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dropout(0.5, seed=1), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def test_resuming_keeps_the_dropout_masks_of_an_uninterrupted_run(tmp_path):
    # Keras does not save a SeedGenerator's state in `.keras` files: without
    # the checkpoint's record of it, the resumed epochs would draw the masks
    # of the first epochs again.
    _assert_resumes_as_one_run(_dropout_model, str(tmp_path / "run"), rtol=1e-6)


def _assert_resumes_as_one_run(make_model, checkpoints, rtol):
    """Four epochs interrupted after two and resumed end with the weights
    of four uninterrupted epochs (the data of `_ema_data`)."""
    reference = train_model(make_model(), _ema_data, 4, progress=False).model

    def interrupted(epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return _ema_data()

    with pytest.raises(KeyboardInterrupt):
        train_model(
            make_model(), interrupted, 4, checkpoint_dir=checkpoints, progress=False
        )
    resumed = train_model(
        make_model(), _ema_data, 4, checkpoint_dir=checkpoints, progress=False
    )
    assert resumed.resumed_from == 2
    for ours, theirs in zip(_weights(resumed.model), _weights(reference), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=rtol)


def test_resuming_with_another_monitor_is_refused(train, tmp_path):
    checkpoints = str(tmp_path / "run")
    metrics = {"recall@20": 0.1, "ndcg@20": 0.05}
    train_model(
        _model(train),
        _data(train),
        1,
        checkpoint_dir=checkpoints,
        evaluate=lambda m: metrics,
        monitor="recall@20",
        progress=False,
    )
    with pytest.raises(ValueError, match="monitor='recall@20'.*not monitor='ndcg@20'"):
        train_model(
            _model(train),
            _data(train),
            2,
            checkpoint_dir=checkpoints,
            evaluate=lambda m: metrics,
            monitor="ndcg@20",
            progress=False,
        )


def test_the_time_budget_counts_evaluations_and_epochs_do_not(
    train, tmp_path, monkeypatch
):
    # An epoch takes 5 s, an evaluation 20 s. The budget of 15 s stops the
    # run after one epoch; the checkpoint records the 25 s spent (a rerun
    # with the same budget must not train on), seconds_per_epoch the 5.
    now = [0.0]
    monkeypatch.setattr(
        trainer, "time", types.SimpleNamespace(perf_counter=lambda: now[0])
    )

    def fit_epoch(model, dataset, epoch):
        now[0] += 5.0
        return 1.0

    def evaluate(model):
        now[0] += 20.0
        return {"score": 1.0}

    checkpoints = str(tmp_path / "run")
    result = train_model(
        _model(train),
        _data(train),
        10,
        checkpoint_dir=checkpoints,
        evaluate=evaluate,
        time_budget=15.0,
        fit_epoch=fit_epoch,
        progress=False,
    )
    assert result.stopped_by == "time_budget" and result.epochs_run == 1
    assert result.seconds_per_epoch == 5.0
    assert _state(checkpoints)["seconds"] == 25.0


def test_nan_loss_raises_and_keeps_last_good_checkpoint(train, tmp_path):
    checkpoints = str(tmp_path / "run")
    train_model(
        _model(train), _data(train), 1, checkpoint_dir=checkpoints, progress=False
    )
    model_path = _checkpoint_model(checkpoints)
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
    assert _checkpoint_model(checkpoints) == model_path
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


def test_time_budget_stops_before_next_epoch(train, monkeypatch):
    # The clock reads 10 s more at every look: the first epoch starts (10 s
    # spent of 15) and the second does not (30 s).
    ticks = itertools.count(step=10.0)
    clock = types.SimpleNamespace(perf_counter=lambda: float(next(ticks)))
    monkeypatch.setattr(trainer, "time", clock)
    result = train_model(
        _model(train), _data(train), 50, time_budget=15.0, progress=False
    )
    assert result.stopped_by == "time_budget"
    assert result.epochs_run == 1


@pytest.mark.parametrize("budget", [0.0, -1.0, float("nan")])
def test_a_time_budget_that_is_not_positive_is_refused(train, budget):
    # 0 used to stop before the first epoch and return the untrained model.
    with pytest.raises(ValueError, match="time_budget must be a positive"):
        train_model(_model(train), _data(train), 5, time_budget=budget, progress=False)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"eval_every": 0}, "`eval_every` must be an integer >= 1"),
        ({"patience": 0}, "`patience` must be an integer >= 1"),
        ({"patience": 2.5}, "`patience` must be an integer >= 1"),
        # Both were ignored before: a run meant to stop early ran on.
        ({"patience": 2}, "patience=2 needs a `monitor`"),
        ({"monitor": "score"}, "monitor='score' needs `evaluate`"),
    ],
)
def test_an_interval_or_patience_below_one_is_refused(train, options, message):
    # patience=0 used to stop before the first epoch, and eval_every=0 to
    # fail with ZeroDivisionError after a whole epoch.
    with pytest.raises(ValueError, match=message):
        train_model(_model(train), _data(train), 5, progress=False, **options)


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


@pytest.mark.parametrize("values", [[float("nan"), 0.2, 0.3], [0.2, float("inf")]])
def test_a_non_finite_monitored_metric_is_an_error(train, values):
    # NaN (an empty validation set) compared as never better: the best epoch
    # froze at the first evaluation and patience stopped the run early.
    scores = iter(values)
    epoch = values.index(next(v for v in values if not np.isfinite(v))) + 1
    with pytest.raises(FloatingPointError, match=f"'score' is .* at epoch {epoch}"):
        train_model(
            _model(train),
            _data(train),
            8,
            evaluate=lambda m: {"score": next(scores)},
            monitor="score",
            patience=2,
            progress=False,
        )


# --- Resuming with another configuration ---------------------------------------


def _bpr_model(train, embedding_dim=8, learning_rate=1e-2, ema=False, loss=None):
    model = BPRMF(train.num_users, train.num_items, embedding_dim, l2=1e-4, seed=0)
    optimizer = keras.optimizers.Adam(learning_rate, use_ema=ema)
    model.compile(optimizer=optimizer, loss=loss or BPRLoss())
    return model


def test_the_checkpoint_records_the_configuration(train, tmp_path):
    checkpoints = str(tmp_path / "run")
    train_model(
        _model(train), _data(train), 1, checkpoint_dir=checkpoints, progress=False
    )
    with open(os.path.join(checkpoints, STATE_FILE)) as handle:
        recorded = json.load(handle)[CONFIG_KEY]
    assert recorded["class"].endswith("BPRMF")
    assert recorded["model"]["embedding_dim"] == 8
    assert recorded["optimizer"]["config"]["learning_rate"] == pytest.approx(1e-2)
    # Keras numbers the names of later instances (bprmf_1, adam_1): the same
    # configuration all the same.
    assert training_config(_model(train)) == training_config(_model(train))


@pytest.mark.parametrize(
    "changed, key",
    [
        ({"embedding_dim": 16}, "model.embedding_dim"),
        ({"learning_rate": 0.5}, "optimizer.config.learning_rate"),
        ({"ema": True}, "optimizer.config.use_ema"),
        # A resumed checkpoint is compiled with its own loss: it went on
        # with BPR silently before.
        ({"loss": "mse"}, "compile.loss"),
    ],
)
def test_resuming_with_another_configuration_is_refused(train, tmp_path, changed, key):
    checkpoints = str(tmp_path / "run")
    train_model(
        _bpr_model(train), _data(train), 1, checkpoint_dir=checkpoints, progress=False
    )
    with pytest.raises(ValueError, match="another configuration") as raised:
        train_model(
            _bpr_model(train, **changed),
            _data(train),
            3,
            checkpoint_dir=checkpoints,
            progress=False,
        )
    message = str(raised.value)
    assert key in message and checkpoints in message
    assert "new checkpoint_dir" in message and "--force" in message
    # The same configuration still resumes.
    resumed = train_model(
        _bpr_model(train), _data(train), 2, checkpoint_dir=checkpoints, progress=False
    )
    assert resumed.resumed_from == 1 and resumed.epochs_run == 2


def test_a_checkpoint_with_more_epochs_than_requested_is_refused(train, tmp_path):
    checkpoints = str(tmp_path / "run")
    train_model(
        _model(train), _data(train), 2, checkpoint_dir=checkpoints, progress=False
    )
    with pytest.raises(ValueError, match="already trained 2 epochs, more than the 1"):
        train_model(
            _model(train), _data(train), 1, checkpoint_dir=checkpoints, progress=False
        )
    # Exactly as many: a finished run, returned without training.
    done = train_model(
        _model(train), _data(train), 2, checkpoint_dir=checkpoints, progress=False
    )
    assert done.resumed_from == 2 and done.epochs_run == 2


def _edit_state(checkpoints, edit):
    """Rewrites the checkpoint's `state.json` through `edit(state)`."""
    state = _state(checkpoints)
    edit(state)
    with open(os.path.join(checkpoints, STATE_FILE), "w") as handle:
        json.dump(state, handle)


def _drop_model_key(checkpoints, key):
    _edit_state(checkpoints, lambda state: state[CONFIG_KEY]["model"].pop(key))


def _drop_record(checkpoints):
    _edit_state(checkpoints, lambda state: state.pop(CONFIG_KEY, None))


def test_a_key_the_checkpoint_lacks_counts_as_its_default(train, tmp_path):
    # A checkpoint written before an argument existed has no key for it: a
    # model with that argument's default resumes it, another value does not.
    checkpoints = str(tmp_path / "run")
    train_model(
        _model(train), _data(train), 1, checkpoint_dir=checkpoints, progress=False
    )
    _drop_model_key(checkpoints, "l2")  # the model has BPRMF's default, 1e-4
    resumed = train_model(
        _model(train), _data(train), 2, checkpoint_dir=checkpoints, progress=False
    )
    assert resumed.resumed_from == 1 and resumed.epochs_run == 2
    _drop_model_key(checkpoints, "seed")  # the model's 0 is not the default
    with pytest.raises(ValueError, match=r"model\.seed \('<absent>' -> 0\)"):
        train_model(
            _model(train), _data(train), 3, checkpoint_dir=checkpoints, progress=False
        )


def test_a_checkpoint_without_the_compile_record_still_resumes(train, tmp_path):
    checkpoints = str(tmp_path / "run")
    train_model(
        _bpr_model(train), _data(train), 1, checkpoint_dir=checkpoints, progress=False
    )
    assert _state(checkpoints)[CONFIG_KEY]["compile"]["loss"] is not None
    _edit_state(checkpoints, lambda state: state[CONFIG_KEY].pop("compile"))
    resumed = train_model(
        _bpr_model(train), _data(train), 2, checkpoint_dir=checkpoints, progress=False
    )
    assert resumed.resumed_from == 1 and resumed.epochs_run == 2


def test_an_old_checkpoint_without_the_record_still_resumes(train, tmp_path):
    checkpoints = str(tmp_path / "run")
    train_model(
        _model(train), _data(train), 1, checkpoint_dir=checkpoints, progress=False
    )
    _drop_record(checkpoints)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train_model(
            _model(train), _data(train), 2, checkpoint_dir=checkpoints, progress=False
        )
    # The same configuration: no warning.
    assert not [w for w in caught if "records no configuration" in str(w.message)]
    assert resumed.resumed_from == 1 and resumed.epochs_run == 2
    # Another configuration: resumed as before, with a warning naming it.
    _drop_record(checkpoints)
    with pytest.warns(UserWarning, match="learning_rate"):
        resumed = train_model(
            _model(train, learning_rate=0.5),
            _data(train),
            3,
            checkpoint_dir=checkpoints,
            progress=False,
        )
    assert resumed.resumed_from == 2 and resumed.epochs_run == 3


def _train_on(train, checkpoints, epochs, data_checksum=None, **options):
    return train_model(
        _model(train),
        _data(train),
        epochs,
        checkpoint_dir=checkpoints,
        progress=False,
        data_checksum=data_checksum,
        **options,
    )


def test_resuming_on_another_split_is_refused(train, tmp_path):
    checkpoints = str(tmp_path / "run")
    _train_on(train, checkpoints, 1, "a" * 64)
    assert _state(checkpoints)["data_checksum"] == "a" * 64
    with pytest.raises(ValueError, match="other data or another split") as raised:
        _train_on(train, checkpoints, 2, "b" * 64)
    message = str(raised.value)
    assert "aaaaaaaaaaaa... -> bbbbbbbbbbbb..." in message and checkpoints in message
    assert "--force" in message
    # The same data resumes; no checksum passed: not checked.
    assert _train_on(train, checkpoints, 2, "a" * 64).resumed_from == 1
    assert _train_on(train, checkpoints, 3, None).resumed_from == 2


def test_a_checkpoint_without_a_data_checksum_resumes_with_a_warning(train, tmp_path):
    checkpoints = str(tmp_path / "run")
    _train_on(train, checkpoints, 1, None)
    _edit_state(checkpoints, lambda state: state.pop("data_checksum"))
    with pytest.warns(UserWarning, match="records no data checksum"):
        assert _train_on(train, checkpoints, 2, "a" * 64).resumed_from == 1
    # From then on it records the data it was resumed on.
    assert _state(checkpoints)["data_checksum"] == "a" * 64
    with pytest.raises(ValueError, match="other data or another split"):
        _train_on(train, checkpoints, 3, "b" * 64)


# --- Polyak averaging (an optimizer with use_ema=True) -------------------------


def _ema_model(loss_scaled=False):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.8)
    if loss_scaled:  # as mixed precision wraps it
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _ema_data(epoch=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], "float32"))[:, None]
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def _weights(model):
    return [w.numpy() for w in model.trainable_variables]


@pytest.mark.parametrize("loss_scaled", [False, True])
def test_ema_optimizer_trains_as_one_long_fit(loss_scaled):
    # One fit over 3 epochs: training goes on from the raw weights and the
    # moving averages are written into the model at the end.
    reference = _ema_model(loss_scaled)
    reference.fit(_ema_data(), epochs=3, verbose=0, shuffle=False)
    seen = []

    def evaluate(model):
        seen.append(_weights(model))
        return {"score": 0.0}

    result = train_model(
        _ema_model(loss_scaled), _ema_data, 3, evaluate=evaluate, progress=False
    )
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
    _assert_resumes_as_one_run(_ema_model, str(tmp_path / "run"), rtol=1e-5)


def test_ema_optimizer_resume_checks_the_averaging(tmp_path):
    checkpoints = str(tmp_path / "run")
    train_model(_ema_model(), _ema_data, 1, checkpoint_dir=checkpoints, progress=False)
    other = _ema_model()
    other.optimizer.ema_momentum = 0.5
    with pytest.raises(ValueError, match="ema_momentum"):
        train_model(other, _ema_data, 2, checkpoint_dir=checkpoints, progress=False)


def test_a_checkpoint_resumes_whatever_its_speed_only_settings():
    # `sparse_rows` is on for Gowalla on a CPU and off on a GPU: it changes
    # the speed, not the function, so a CPU checkpoint resumes on a GPU.
    recorded = {"class": "M", "model": {"num_items": 5, "sparse_rows": True}}
    state = {"epoch": 1, trainer.CONFIG_KEY: recorded}
    now = {"class": "M", "model": {"num_items": 5, "sparse_rows": False}}
    trainer._check_resumable(state, now, 2, "dir", "run")
    other = {"class": "M", "model": {"num_items": 6, "sparse_rows": False}}
    with pytest.raises(ValueError, match="num_items"):
        trainer._check_resumable(state, other, 2, "dir", "run")

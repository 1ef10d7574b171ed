"""Epoch loop with checkpoints, resume, NaN guard, time budget and eval curve.

`train_model` runs Keras `fit` one epoch at a time on a fresh pipeline from
`make_dataset(epoch)` (so negatives are re-drawn every epoch), and after each
epoch writes the model (`model-<epoch>/`, Keras' unzipped format) and then
`state.json`, which names it, atomically into `checkpoint_dir`; the previous
epoch's model is removed only after that. An interrupted run (Ctrl-C, a killed process, even
one killed between the two writes) resumes from the last epoch `state.json`
records, with the optimizer state, the state of the model's random seed
generators (dropout, sampling: Keras does not save them in `.keras` files),
the RNG stream of the data (it is keyed by epoch) and the evaluation curve
intact. `state.json` also
records the model's class and config and the optimizer's config
(`training_config`): a checkpoint is only resumed with a model configured
the same way, since resuming loads the checkpoint's model, not the one
passed in. A model-config key the checkpoint lacks (an argument added to
the model since) counts as the same when the model passed in has that
argument's default.

An optimizer with `use_ema=True` (Polyak averaging) keeps its meaning
across the per-epoch `fit` calls: training goes on from the raw weights,
while evaluations, the kept best weights and the returned model use the
moving averages, as one long `fit` would end with them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable

try:
    import fcntl
except ImportError:  # not on Windows: checkpoints are not locked there
    fcntl = None

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from keras_rec.data.pipelines import check_count
from keras_rec.training.distributed import any_worker, build_in_scope, is_chief
from keras_rec.training.results import atomic_write_json, differing_keys, flatten

#: The model file of checkpoints written before `state.json` named it.
MODEL_FILE = "model.keras"
#: The kept best weights of such checkpoints.
BEST_FILE = "best.weights.h5"
STATE_FILE = "state.json"
#: Key of `training_config` in `state.json` (absent in older checkpoints).
CONFIG_KEY = "config"
#: Key of the training data's checksum in `state.json` (absent in older ones).
DATA_KEY = "data_checksum"
#: Key of the caller's other run settings (`train_model(settings=...)`).
SETTINGS_KEY = "settings"


@dataclasses.dataclass
class TrainingResult:
    """What `train_model` returns: the trained model and its history."""

    model: keras.Model
    losses: list[float]
    curve: list[dict]
    epochs_run: int
    seconds_per_epoch: float
    stopped_by: str
    resumed_from: int
    best: dict | None = None


def _atomic_save(model: keras.Model, path: str) -> None:
    """Saves `model` as the directory `path` (Keras' unzipped format), which
    appears complete or not at all.

    Unzipped because Keras builds a `.keras` archive in memory when it
    finds room for it: the Gowalla top-50% Neural EASE's checkpoint (4.7
    GiB of weights and Nadam moments) took 7.8 GiB more to write and 27.6
    s, against 3.1 GiB and 9.1 s unzipped.
    """
    temporary = path + ".tmp"
    for stale in (temporary, path):  # of an interrupted run: named by no state
        shutil.rmtree(stale, ignore_errors=True)
    model.save(temporary, zipped=False)
    os.replace(temporary, path)


def _atomic_save_weights(model: keras.Model, path: str) -> None:
    temporary = path + ".tmp.weights.h5"
    model.save_weights(temporary)
    os.replace(temporary, path)


def _model_file(epoch: int) -> str:
    return f"model-{epoch:05d}"


def _best_file(epoch: int) -> str:
    return f"best-{epoch:05d}.weights.h5"


def _checkpoint_files(checkpoint_dir: str) -> list[str]:
    """The model and best-weights files in `checkpoint_dir` (any epoch, the
    zipped `.keras` models of older checkpoints too, and the temporary
    files of an interrupted write, `state.json`'s included)."""
    return [
        name
        for name in os.listdir(checkpoint_dir)
        if re.fullmatch(
            rf"\.{re.escape(STATE_FILE)}\..+\.tmp|{re.escape(STATE_FILE)}\.tmp", name
        )
        or re.fullmatch(
            r"(model-\d+(\.keras)?|best-\d+\.weights\.h5)(\.tmp(\.keras|\.weights\.h5)?)?",
            name,
        )
        or name in (MODEL_FILE, BEST_FILE)
    ]


def _referenced_files(state: dict) -> set[str]:
    files = {state.get("model_file", MODEL_FILE)}
    if state.get("best"):
        files.add(state.get("best_file", BEST_FILE))
    return files


def _write_checkpoint(model: keras.Model, state: dict, checkpoint_dir: str) -> None:
    """Saves the model under its epoch's name, then `state.json` naming it,
    then removes the files no longer named: a kill at any point leaves a
    `state.json` whose files exist and match it."""
    state["model_file"] = _model_file(state["epoch"])
    state["seed_states"] = _seed_states(model)
    _atomic_save(model, os.path.join(checkpoint_dir, state["model_file"]))
    atomic_write_json(os.path.join(checkpoint_dir, STATE_FILE), state)
    _remove_unreferenced(checkpoint_dir, state)


#: File in a checkpoint folder that the training process holds locked.
LOCK_FILE = ".lock"


class CheckpointInUseError(RuntimeError):
    """Another process is training from the same checkpoint folder."""


@contextlib.contextmanager
def _checkpoint_lock(checkpoint_dir: str | None, strategy, description: str):
    """Holds an exclusive lock on `checkpoint_dir` while training from it.

    Two processes training one run (e.g. `train_all.py --models gmf` and
    `--models neumf`, whose pre-training trains GMF too) would overwrite
    and delete each other's files. The lock is `flock` on `.lock` (it goes
    with the process, so a killed run leaves no stale lock); only the chief
    takes it, since only the chief writes. Without `fcntl` (Windows) there
    is no lock.
    """
    if not checkpoint_dir or not is_chief(strategy):
        yield
        return
    os.makedirs(checkpoint_dir, exist_ok=True)

    def refuse(owner: str) -> None:
        raise CheckpointInUseError(
            f"{description}: another process (pid {owner}) is training from "
            f"{checkpoint_dir}; wait for it to end (or stop it) before "
            "running this one again"
        )

    with pid_lock(os.path.join(checkpoint_dir, LOCK_FILE), refuse):
        yield


@contextlib.contextmanager
def pid_lock(path: str, busy: Callable[[str], None]):
    """Holds an exclusive `flock` on the file `path`, with this process's pid
    written in it. When another process holds it, `busy(its pid)` is called
    first: it raises to give up, or returns to wait for the lock. The lock
    goes with the process, so a killed one leaves none. Without `fcntl`
    (Windows) there is no lock."""
    if fcntl is None:
        yield
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            busy(handle.read().strip() or "unknown")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_unreferenced(checkpoint_dir: str, state: dict) -> None:
    keep = _referenced_files(state)
    for name in _checkpoint_files(checkpoint_dir):
        if name not in keep:
            remove_path(os.path.join(checkpoint_dir, name))


def remove_path(path: str) -> None:
    """Deletes the file, link or folder (with its contents) at `path`, if
    it is there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _seed_generator_variables(model: keras.Model) -> list:
    """The state variables of the model's `SeedGenerator`s (dropout, VAE
    sampling, node dropout): in `model.variables` but not in `model.weights`,
    so `.keras` files do not keep them."""
    saved = {id(variable) for variable in model.weights}
    return [v for v in model.variables if id(v) not in saved]


def _seed_states(model: keras.Model) -> list[list[int]]:
    return [
        [int(x) for x in keras.ops.convert_to_numpy(v.value).reshape(-1)]
        for v in _seed_generator_variables(model)
    ]


def _restore_seed_states(model: keras.Model, states, checkpoint_dir: str) -> None:
    if states is None:  # an older checkpoint: nothing recorded
        return
    variables = _seed_generator_variables(model)
    sizes = [int(np.prod(v.shape)) for v in variables]
    if [len(values) for values in states] != sizes:
        raise ValueError(
            f"the checkpoint in {checkpoint_dir} records {len(states)} random "
            f"seed generator states, the model loaded from it has "
            f"{len(variables)}: the checkpoint does not belong to this model. "
            + _start_over(checkpoint_dir)
        )
    for variable, values in zip(variables, states, strict=True):
        variable.assign(
            np.asarray(values, dtype=variable.dtype).reshape(variable.shape)
        )


# The compile arguments a checkpoint records (`model.get_compile_config()`
# less the optimizer, recorded apart, and the speed-only ones).
COMPILE_KEYS = ("loss", "loss_weights", "metrics", "weighted_metrics")


def training_config(model: keras.Model) -> dict:
    """What a checkpoint records of how its model was set up: the model's
    class and `get_config()` and its optimizer's serialised config, as
    JSON-able values, with the `_<n>` that Keras appends to generated names
    (`bprmf_1`, `dense_3`, `adam_2`) taken off so that two identically
    built models compare equal; and what it was compiled with that changes
    the result (`COMPILE_KEYS`: loss, loss weights, metrics), since a
    resumed checkpoint keeps its own."""
    optimizer = getattr(model, "optimizer", None)
    try:
        config = model.get_config()
    except NotImplementedError:  # a subclass without a config: class only
        config = None
    compiled = model.get_compile_config() if getattr(model, "compiled", False) else None
    record = {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model": config,
        "optimizer": (
            None
            if optimizer is None
            else keras.saving.serialize_keras_object(optimizer)
        ),
        "compile": (
            None
            if compiled is None
            else {key: compiled.get(key) for key in COMPILE_KEYS}
        ),
    }
    record = json.loads(json.dumps(record, default=_json_default, sort_keys=True))
    names = {}
    _collect_names(record, names)
    return _rename(record, names)


def _json_default(value):
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    try:
        return keras.saving.serialize_keras_object(value)
    except (TypeError, ValueError):
        return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _collect_names(value, names: dict) -> None:
    """Maps every string under a `name` key to it without a `_<n>` suffix."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "name" and isinstance(item, str):
                names[item] = re.sub(r"_\d+$", "", item)
            else:
                _collect_names(item, names)
    elif isinstance(value, list):
        for item in value:
            _collect_names(item, names)


def _rename(value, names: dict):
    """`value` with the strings of `names` replaced (a functional model's
    layer references too, not only the `name` fields)."""
    if isinstance(value, dict):
        return {key: _rename(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [_rename(item, names) for item in value]
    if isinstance(value, str):
        return names.get(value, value)
    return value


def _start_over(checkpoint_dir: str) -> str:
    return (
        f"Use a new checkpoint_dir, or delete {checkpoint_dir} to start over "
        "(train_all.py: --force does that for a run that has written results; "
        "an interrupted run's checkpoint has to be deleted by hand)."
    )


def _constructor_defaults(model_class: type) -> dict:
    """`{argument: default}` of `model_class.__init__`, as JSON values."""
    try:
        parameters = inspect.signature(model_class.__init__).parameters.values()
    except (TypeError, ValueError):  # a builtin or C-level constructor
        return {}
    defaults = {
        p.name: p.default
        for p in parameters
        if p.default is not inspect.Parameter.empty
    }
    return json.loads(json.dumps(defaults, default=_json_default))


#: Model-config keys that change how fast a model trains, not what it
#: computes (`sparse_rows`: the autoencoder configs turn it on for sparse
#: data on a CPU and off on a GPU). A checkpoint resumes whatever their
#: value; the resumed model keeps the checkpoint's.
SPEED_ONLY_KEYS = ("sparse_rows",)


def _without_speed_keys(config: dict) -> dict:
    model = config.get("model")
    if not isinstance(model, dict) or not any(k in model for k in SPEED_ONLY_KEYS):
        return config
    kept = {key: value for key, value in model.items() if key not in SPEED_ONLY_KEYS}
    return {**config, "model": kept}


def _with_absent_defaults(recorded: dict, expected: dict, model_class: type) -> dict:
    """`recorded` with the model-config keys it lacks taken from `expected`
    where `expected` holds the constructor's default.

    A checkpoint written before a constructor argument existed records no
    key for it, and its model was built as that argument's default builds
    it now; so a model passed in with the default resumes it, and one with
    another value does not."""
    recorded_model, expected_model = recorded.get("model"), expected.get("model")
    if not isinstance(recorded_model, dict) or not isinstance(expected_model, dict):
        return recorded
    defaults = _constructor_defaults(model_class)
    filled = {
        key: value
        for key, value in expected_model.items()
        if key not in recorded_model and key in defaults and defaults[key] == value
    }
    if not filled:
        return recorded
    return {**recorded, "model": {**recorded_model, **filled}}


def _check_resumable(
    state: dict,
    expected: dict,
    epochs: int,
    checkpoint_dir: str,
    description: str,
    model_class: type | None = None,
) -> None:
    """Raises ValueError if the checkpoint's recorded configuration differs
    from `expected` or it holds more epochs than `epochs`. Model-config keys
    the checkpoint lacks count as equal where `expected` has the default of
    `model_class`'s constructor (`_with_absent_defaults`)."""
    recorded = state.get(CONFIG_KEY)
    if recorded is not None and "compile" not in recorded:
        # Written before the compile arguments were recorded: not compared.
        expected = {key: value for key, value in expected.items() if key != "compile"}
    if recorded is not None and model_class is not None:
        recorded = _with_absent_defaults(recorded, expected, model_class)
    if recorded is not None:
        recorded, expected = (
            _without_speed_keys(recorded),
            _without_speed_keys(expected),
        )
    if recorded is not None and recorded != expected:
        differences = _describe(differing_keys(recorded, expected), recorded, expected)
        raise ValueError(
            f"{description}: the checkpoint in {checkpoint_dir} was trained with "
            "another configuration than the model passed in, and resuming would "
            "go on training the checkpoint's model. Differences (checkpoint -> "
            f"now): {differences}. " + _start_over(checkpoint_dir)
        )
    if state["epoch"] > epochs:
        raise ValueError(
            f"{description}: the checkpoint in {checkpoint_dir} has already "
            f"trained {state['epoch']} epochs, more than the {epochs} requested. "
            f"Pass epochs={state['epoch']} (or more) to use or continue it. "
            + _start_over(checkpoint_dir)
        )


def _check_monitor(state: dict, monitor, checkpoint_dir: str, description: str):
    """Raises ValueError if the checkpoint kept its best weights by another
    metric than `monitor`: the new metric would be compared with the old
    one's best value."""
    if "monitor" not in state or state["monitor"] == monitor:
        return
    if state.get("best") is None:
        return
    raise ValueError(
        f"{description}: the checkpoint in {checkpoint_dir} kept its best "
        f"weights by monitor={state['monitor']!r} (best {state['best']['value']} "
        f"at epoch {state['best']['epoch']}), not monitor={monitor!r}: resuming "
        "would compare the two metrics. Resume with the same monitor. "
        + _start_over(checkpoint_dir)
    )


def _check_data(state: dict, data_checksum, checkpoint_dir: str, description):
    """Raises ValueError if the checkpoint was trained on other data than
    `data_checksum` names: going on would mix two splits, and the second's
    held-out users may be in the first one's training data. A checkpoint
    that records none (an older keras_rec) is resumed with a warning."""
    if data_checksum is None:
        return
    recorded = state.get(DATA_KEY)
    if recorded is None:
        warnings.warn(
            f"{description}: the checkpoint in {checkpoint_dir} records no data "
            "checksum (written by an older keras_rec), so it cannot be checked "
            "that it was trained on this split; training goes on from it. "
            + _start_over(checkpoint_dir),
            stacklevel=3,
        )
    elif recorded != data_checksum:
        raise ValueError(
            f"{description}: the checkpoint in {checkpoint_dir} was trained on "
            f"other data or another split (data checksum {recorded[:12]}... -> "
            f"{data_checksum[:12]}... now: another data file, seed, protocol "
            "option or splitting code), and going on from it could train on "
            "the held-out users' items. " + _start_over(checkpoint_dir)
        )


def _check_settings(state: dict, settings, checkpoint_dir: str, description):
    """Raises ValueError if the checkpoint records other `settings` (the
    batch size, the negatives, the patience, ...): the run would go on
    under settings its record does not describe. A checkpoint that records
    none (an older keras_rec, or a caller that passed none) is resumed.
    `settings` is in its JSON form, as `state.json` holds it."""
    recorded = state.get(SETTINGS_KEY)
    if settings is None or recorded is None:
        return
    if recorded != settings:
        differences = _describe(differing_keys(recorded, settings), recorded, settings)
        raise ValueError(
            f"{description}: the checkpoint in {checkpoint_dir} was trained "
            f"with other settings. Differences (checkpoint -> now): "
            f"{differences}. Resume with its settings. " + _start_over(checkpoint_dir)
        )


def _warn_unrecorded(model, expected: dict, checkpoint_dir: str, description):
    """An old checkpoint records no configuration: resume it, but say so if
    the loaded model's config is not the one passed in."""
    loaded = training_config(model)
    differences = differing_keys(loaded, expected)
    if differences:
        warnings.warn(
            f"{description}: the checkpoint in {checkpoint_dir} records no "
            "configuration (written by an older keras_rec); the model loaded from "
            "it differs from the one passed in (checkpoint -> now): "
            f"{_describe(differences, loaded, expected)}. Training goes on from "
            "the checkpoint's model. " + _start_over(checkpoint_dir),
            stacklevel=3,
        )


def _describe(keys: list[str], before: dict, after: dict, limit: int = 8) -> str:
    flat_before, flat_after = flatten(before), flatten(after)
    parts = [
        f"{key} ({flat_before.get(key, '<absent>')!r} -> "
        f"{flat_after.get(key, '<absent>')!r})"
        for key in keys[:limit]
    ]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return ", ".join(parts)


def _locks_checkpoint(function: Callable) -> Callable:
    """`function` (`train_model`) run inside `_checkpoint_lock` of its
    `checkpoint_dir`."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def locked(*args, **kwargs):
        options = signature.bind(*args, **kwargs)
        options.apply_defaults()
        arguments = options.arguments
        with _checkpoint_lock(
            arguments["checkpoint_dir"],
            arguments["strategy"],
            arguments["description"],
        ):
            return function(*args, **kwargs)

    return locked


@_locks_checkpoint
def train_model(
    model: keras.Model,
    make_dataset: Callable[[int], tf.data.Dataset],
    epochs: int,
    checkpoint_dir: str | None = None,
    evaluate: Callable[[keras.Model], dict] | None = None,
    eval_every: int = 1,
    monitor: str | None = None,
    patience: int | None = None,
    evaluate_first: bool = False,
    time_budget: float | None = None,
    progress: bool = True,
    fit_epoch: Callable[[keras.Model, tf.data.Dataset, int], float] | None = None,
    description: str = "training",
    strategy: tf.distribute.Strategy | None = None,
    data_checksum: str | None = None,
    settings: dict | None = None,
) -> TrainingResult:
    """Trains `model` for up to `epochs` epochs, resumable from `checkpoint_dir`.

    Args:
        model: a compiled Keras model.
        make_dataset: `epoch -> tf.data.Dataset` for that epoch.
        epochs: total number of epochs (including any already done).
        checkpoint_dir: where the model file and `state.json` go; `None`
            for none.
        evaluate: `model -> metrics` run every `eval_every` epochs (on the
            validation set, typically); the curve is kept in the state.
        eval_every: epochs between evaluations (and the last epoch).
        monitor: metric of `evaluate` to keep the best weights by (higher is
            better); the best weights are restored at the end.
        patience: stop after this many evaluations without improvement
            (counted from the saved curve when resuming).
        evaluate_first: also evaluate before the first epoch (as epoch 0),
            so that with `monitor` the starting weights can be the best
            (a model initialised from pre-trained parts).
        time_budget: seconds after which no new epoch starts (positive;
            `None` for no limit).
        progress: show a progress bar over epochs.
        fit_epoch: `(model, dataset, epoch) -> mean loss` to replace Keras
            `fit` (custom training steps, distributed loops).
        description: label of the progress bar.
        strategy: the `tf.distribute` strategy the model was built under.
            A resumed model is loaded in its scope; only the chief writes
            checkpoints, and every worker resumes from them, so with
            several workers `checkpoint_dir` must be a folder they all see
            (a shared file system); stop decisions are agreed on by all
            workers. With several workers pass
            `fit_epoch=DistributedEpoch(...)`.
        data_checksum: identifies the training data and split (e.g.
            `Split.checksum()`); recorded in the checkpoint, and a
            checkpoint that records another one is not resumed.
        settings: JSON-able dict of the run's other settings that change
            what is trained and are not in the model's or optimizer's
            config (the data pipeline's batch size and negatives, the
            patience, ...); recorded in the checkpoint, and a checkpoint
            that records other settings is not resumed (one that records
            none records these from then on).

    Resuming: when `checkpoint_dir` holds a checkpoint, training goes on
    from the checkpoint's model (its weights and optimizer state); `model`
    only says what is expected there. Its class, `get_config()` and its
    optimizer's config (learning rate, schedule, EMA, ...) must be those
    recorded in the checkpoint, up to the numbers Keras appends to
    generated names (`dense_1`); `epochs` may be larger than the
    checkpoint's epoch count (training goes on), or equal (a finished run:
    nothing is trained, the result is returned at once). A checkpoint
    written before this record was kept is resumed as before, with a
    warning if the loaded model's config differs from `model`'s.

    Raises:
        ValueError: `time_budget` is not positive, `eval_every` or
            `patience` not an integer >= 1, `patience` without `monitor`,
            `monitor` without `evaluate`; or `checkpoint_dir` holds
            a checkpoint trained with another configuration (the message
            names the differing keys), for more epochs than `epochs`, with
            its best weights kept by another `monitor`, on other data
            (`data_checksum`), with other `settings`, or whose model file is
            missing.
            Either way, use a new `checkpoint_dir` or delete that one to
            start over (`train_all.py --force`).
        FloatingPointError: the loss became NaN or infinite (the checkpoint
            of the last good epoch is left untouched), or so did the
            `monitor` metric, which would otherwise never compare as better.
        KeyError: `monitor` is not a metric that `evaluate` returns.
        FileNotFoundError: the best epoch's weights file was removed from
            `checkpoint_dir` before the end.
        CheckpointInUseError: another process is training from
            `checkpoint_dir` (the chief holds a lock on it while training).
    """
    if time_budget is not None and not time_budget > 0:
        raise ValueError(
            f"{description}: time_budget must be a positive number of seconds "
            f"(None for no limit), got {time_budget}"
        )
    try:
        check_count(1, eval_every=eval_every)
        if patience is not None:
            check_count(1, patience=patience)
    except ValueError as error:
        raise ValueError(f"{description}: {error}") from None
    # Either would be ignored without a word: nothing to count from, or
    # nothing to compare.
    if patience is not None and monitor is None:
        raise ValueError(
            f"{description}: patience={patience} needs a `monitor` metric to "
            "count evaluations without improvement; pass one, or patience=None"
        )
    if monitor is not None and evaluate is None:
        raise ValueError(
            f"{description}: monitor={monitor!r} needs `evaluate` (the metrics "
            "it is read from); pass one, or monitor=None"
        )
    expected = training_config(model)
    if settings is not None:  # its JSON form (lists, not tuples), as recorded
        settings = json.loads(json.dumps(settings))
    state = {
        "epoch": 0,
        "losses": [],
        "curve": [],
        "seconds": 0.0,
        "train_seconds": 0.0,
        "best": None,
        CONFIG_KEY: expected,
        DATA_KEY: data_checksum,
        SETTINGS_KEY: settings,
    }
    resumed_from = 0
    if checkpoint_dir:
        if is_chief(strategy):
            os.makedirs(checkpoint_dir, exist_ok=True)
        state_path = os.path.join(checkpoint_dir, STATE_FILE)
        if os.path.exists(state_path):
            with open(state_path) as handle:
                state = json.load(handle)
            model_path = os.path.join(
                checkpoint_dir, state.get("model_file", MODEL_FILE)
            )
            if not os.path.exists(model_path):
                raise ValueError(
                    f"{description}: {state_path} records epoch {state['epoch']} "
                    f"but its model file {model_path} is missing. "
                    + _start_over(checkpoint_dir)
                )
            _check_resumable(
                state, expected, epochs, checkpoint_dir, description, type(model)
            )
            _check_monitor(state, monitor, checkpoint_dir, description)
            _check_data(state, data_checksum, checkpoint_dir, description)
            _check_settings(state, settings, checkpoint_dir, description)
            if data_checksum is not None:  # recorded from now on
                state[DATA_KEY] = data_checksum
            if settings is not None:
                state[SETTINGS_KEY] = settings
            jit_compile = getattr(model, "jit_compile", None)
            model = build_in_scope(
                strategy, lambda: keras.saving.load_model(model_path)
            )
            if jit_compile is not None and hasattr(model, "jit_compile"):
                # How the step is compiled is the caller's choice (e.g.
                # `train_all.py --no-xla`), not the checkpoint's.
                model.jit_compile = jit_compile
            _restore_seed_states(model, state.get("seed_states"), checkpoint_dir)
            if CONFIG_KEY not in state:
                _warn_unrecorded(model, expected, checkpoint_dir, description)
            resumed_from = state["epoch"]
            if is_chief(strategy):  # files of an interrupted write
                _remove_unreferenced(checkpoint_dir, state)
    state["monitor"] = monitor
    state.setdefault("train_seconds", None)  # not recorded by older checkpoints
    fit_epoch = fit_epoch or _keras_fit_epoch
    begin = time.perf_counter() - state["seconds"]
    stopped_by = "epochs"
    bar = tqdm(
        total=epochs,
        initial=state["epoch"],
        desc=description,
        disable=not progress,
        unit="epoch",
    )
    if evaluate and evaluate_first and not state["curve"]:
        with averaged_weights(model):
            if _evaluate_point(model, evaluate, 0, state, monitor, description):
                _keep_best(model, state, checkpoint_dir, strategy)
    since_best = _evaluations_since_best(state)
    for epoch in range(state["epoch"], epochs):
        if _agreed(strategy, patience is not None and since_best >= patience):
            stopped_by = "patience"
            break
        over_budget = time_budget is not None and (
            time.perf_counter() - begin > time_budget
        )
        if _agreed(strategy, over_budget):
            stopped_by = "time_budget"
            if checkpoint_dir and is_chief(strategy) and state["epoch"] > 0:
                # The seconds spent up to now (evaluations included), so
                # that a run is continued only under a larger budget.
                state["seconds"] = time.perf_counter() - begin
                atomic_write_json(os.path.join(checkpoint_dir, STATE_FILE), state)
            break
        fit_begin = time.perf_counter()
        loss = float(fit_epoch(model, make_dataset(epoch), epoch))
        if state["train_seconds"] is not None:
            state["train_seconds"] += time.perf_counter() - fit_begin
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"{description}: the training loss became {loss} in epoch "
                f"{epoch + 1}; the checkpoint of epoch {state['epoch']} is kept"
                + (f" in {checkpoint_dir}" if checkpoint_dir else "")
            )
        state["losses"].append(loss)
        state["epoch"] = epoch + 1
        state["seconds"] = time.perf_counter() - begin
        postfix = {"loss": f"{loss:.4f}"}
        if evaluate and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            with averaged_weights(model):
                if _evaluate_point(
                    model, evaluate, epoch + 1, state, monitor, description
                ):
                    _keep_best(model, state, checkpoint_dir, strategy)
            since_best = _evaluations_since_best(state)
            if monitor:
                postfix[monitor] = f"{state['curve'][-1][monitor]:.4f}"
        state["seconds"] = time.perf_counter() - begin  # evaluation included
        if checkpoint_dir and is_chief(strategy):
            _write_checkpoint(model, state, checkpoint_dir)
        bar.update(1)
        bar.set_postfix(postfix)
    bar.close()
    if monitor and state["best"] is not None:
        _restore_best(model, state, checkpoint_dir, strategy)
    elif state["epoch"] > 0 and (optimizer := _ema_optimizer(model)) is not None:
        optimizer.finalize_variable_values(model.trainable_variables)
    epochs_run = len(state["losses"])
    fit_seconds = state["train_seconds"]
    if fit_seconds is None:  # an older checkpoint: evaluations included
        fit_seconds = state["seconds"]
    return TrainingResult(
        model=model,
        losses=state["losses"],
        curve=state["curve"],
        epochs_run=epochs_run,
        seconds_per_epoch=fit_seconds / max(1, epochs_run),
        stopped_by=stopped_by,
        resumed_from=resumed_from,
        best=state["best"] if monitor else None,
    )


def _evaluate_point(
    model, evaluate, epoch: int, state: dict, monitor, description: str
) -> bool:
    """Appends `evaluate(model)` to the curve; whether `monitor` improved.

    Raises FloatingPointError when `monitor` is NaN or infinite: nothing
    compares as better than NaN, so the best epoch would freeze there.
    """
    metrics = evaluate(model)
    state["curve"].append({"epoch": epoch, "seconds": state["seconds"], **metrics})
    if not monitor:
        return False
    if monitor not in metrics:
        raise KeyError(
            f"monitor={monitor!r} is not among the evaluated metrics {sorted(metrics)}"
        )
    value = metrics[monitor]
    if not math.isfinite(float(value)):
        raise FloatingPointError(
            f"{description}: the monitored metric {monitor!r} is {value} at epoch "
            f"{epoch}, so no best epoch can be chosen by it (an empty validation "
            "set evaluates to NaN)"
        )
    if state["best"] is None or value > state["best"]["value"]:
        state["best"] = {"epoch": epoch, "value": value}
        return True
    return False


def _keep_best(model, state: dict, checkpoint_dir, strategy) -> None:
    """Keeps the current weights as the best: on disk (chief only) when
    checkpointing, else in `state` until `_restore_best`."""
    if checkpoint_dir:
        # A new file per best epoch, named in `state.json` by the next
        # checkpoint: the one it names now stays as it is until then.
        state["best_file"] = _best_file(state["best"]["epoch"])
        if is_chief(strategy):
            _atomic_save_weights(
                model, os.path.join(checkpoint_dir, state["best_file"])
            )
    else:
        state["best_weights"] = [w.numpy() for w in model.weights]


def _evaluations_since_best(state: dict) -> int:
    """Evaluations after the best one (all of them when none is best yet)."""
    if state["best"] is None:
        return 0
    return sum(1 for point in state["curve"] if point["epoch"] > state["best"]["epoch"])


def _agreed(strategy, flag: bool) -> bool:
    """`flag`, or with several workers: whether it holds on any of them."""
    return flag if strategy is None else any_worker(strategy, flag)


def _restore_best(model, state, checkpoint_dir, strategy=None) -> None:
    """Loads the best epoch's weights kept by `_keep_best`; on the chief a
    missing file is an error (the result would report the best epoch's
    metrics for the last epoch's weights)."""
    if checkpoint_dir:
        path = os.path.join(checkpoint_dir, state.get("best_file", BEST_FILE))
        if os.path.exists(path):
            model.load_weights(path)
        elif is_chief(strategy):
            raise FileNotFoundError(
                f"The best epoch's weights ({state['best']}) are missing from "
                f"{path}; the checkpoint folder was changed while training. "
                f"Delete {checkpoint_dir} to train again from scratch."
            )
    elif "best_weights" in state:
        for variable, value in zip(
            model.weights, state.pop("best_weights"), strict=True
        ):
            variable.assign(value)


def _averaging_optimizer(model: keras.Model):
    """The model's optimizer (inside a loss-scaling wrapper) if it keeps
    moving averages of the weights (`use_ema=True`), else None."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # loss scaling
    return optimizer if getattr(optimizer, "use_ema", False) else None


def _ema_optimizer(model: keras.Model):
    """`_averaging_optimizer` once it has built its averages, else None."""
    optimizer = _averaging_optimizer(model)
    return optimizer if optimizer is not None and optimizer.built else None


@contextlib.contextmanager
def averaged_weights(model: keras.Model):
    """Within the block the model's trainable weights are its optimizer's
    moving averages (`use_ema=True`); the raw weights come back on exit.
    Without such an optimizer, or before its first step, nothing changes."""
    if _ema_optimizer(model) is None:
        yield model
        return
    swap = keras.callbacks.SwapEMAWeights()
    swap.set_model(model)
    swap.on_test_begin()
    try:
        yield model
    finally:
        swap.on_test_end()


class _KeepRawWeights(keras.callbacks.Callback):
    """`fit` ends by writing the optimizer's moving averages into the weights
    (`use_ema=True`). With one `fit` per epoch that would restart every
    epoch from the averages; this puts the raw weights back."""

    def on_epoch_end(self, epoch, logs=None):
        self.raw = [v.numpy() for v in self.model.trainable_variables]

    def on_train_end(self, logs=None):
        if hasattr(self, "raw"):
            for variable, value in zip(
                self.model.trainable_variables, self.raw, strict=True
            ):
                variable.assign(value)


def _keras_fit_epoch(model: keras.Model, dataset: tf.data.Dataset, epoch: int) -> float:
    callbacks = [keras.callbacks.TerminateOnNaN()]
    if _averaging_optimizer(model) is not None:
        callbacks.append(_KeepRawWeights())
    history = model.fit(
        dataset,
        initial_epoch=epoch,
        epochs=epoch + 1,
        verbose=0,
        shuffle=False,  # the pipeline shuffles, freshly every epoch
        callbacks=callbacks,
    )
    return history.history["loss"][-1]

"""Reproduction runs: train, evaluate and export every selected experiment.

    python train_all.py                                   # all models, synthetic data
    python train_all.py --models bpr_mf --datasets gowalla --data-dir ../shared/data

For each (experiment, seed) it writes `results/<model>_<dataset>_seed<k>.json`
(config, seed, dataset checksum, package versions, the code's git commit,
whether oneDNN ran, metrics; the learning
curve and seconds per epoch of gradient-trained models), refreshes
`results/RESULTS.md` (ours beside the paper's numbers, mean ± std over
seeds), and exports a model to `saved_models/<model>_<dataset>/`
(SavedModel in `1/`, `model.tflite`, `model.keras`, and `export.json`
naming the run that wrote them): of one configuration's runs, the lowest
seed's, a finished run's before one its `--time-budget` stopped, unless
`--force` replaced it (see `_export_refusal`). A finished run is never
redone unless `--force`; an interrupted one resumes from
`checkpoints/<run>/`, and so does one its `--time-budget` stopped when the
command is run again with a budget above the seconds it has spent (or
none). No model logic lives here: see `keras_rec/configs`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
import uuid

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # see keras_rec/__init__.py

import keras
import numpy as np
import tensorflow as tf

import keras_rec  # noqa: F401  (registers the Keras classes)
from keras_rec import configs, plots
from keras_rec.data import load_dataset, make_split
from keras_rec.data.datasets import DATA_DIR_ENV
from keras_rec.evaluation import evaluate
from keras_rec.training.distributed import (
    DistributedEpoch,
    any_worker,
    build_in_scope,
    is_chief,
    make_strategy,
)
from keras_rec.training.results import (
    atomic_write_json,
    atomic_write_text,
    code_version,
    differing_keys,
    flatten,
    markdown_table,
    onednn_enabled,
    package_versions,
    summarize_seeds,
)
from keras_rec.training.trainer import (
    LOCK_FILE,
    STATE_FILE,
    CheckpointInUseError,
    TrainingResult,
    _agreed,
    _checkpoint_lock,
    pid_lock,
    remove_path,
    train_model,
)

NON_METRICS = ("num_users", "seconds")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated model names (default: all)")
    parser.add_argument(
        "--datasets",
        help="comma-separated dataset names (default: synthetic; with --list, all)",
    )
    parser.add_argument(
        "--data-dir", help=f"data directory (default: ${DATA_DIR_ENV} or ./data)"
    )
    parser.add_argument(
        "--seeds", default="0", help="comma-separated seeds (default: %(default)s)"
    )
    parser.add_argument("--epochs", type=int, help="override every entry's epochs")
    parser.add_argument(
        "--time-budget", type=float, help="seconds per run after which training stops"
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        help="epochs between learning-curve evaluations (default: each entry's)",
    )
    parser.add_argument(
        "--results-dir",
        default="results",
        help="results JSONs and RESULTS.md (default: %(default)s)",
    )
    parser.add_argument(
        "--checkpoints-dir",
        default="checkpoints",
        help="per-run checkpoints to resume from (default: %(default)s)",
    )
    parser.add_argument(
        "--saved-models-dir",
        default="saved_models",
        help="exports: SavedModel, TFLite, .keras (default: %(default)s)",
    )
    parser.add_argument("--no-export", action="store_true", help="skip exporting")
    parser.add_argument("--force", action="store_true", help="redo finished runs")
    parser.add_argument(
        "--strategy",
        default="none",
        help="tf.distribute strategy: none, mirrored, multi_worker (TF_CONFIG)",
    )
    parser.add_argument(
        "--no-xla",
        action="store_true",
        help="compile no train step with XLA (NCF's entries do by default): "
        "a quicker start on small data, or where XLA fails",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the entries (those of --models and --datasets when given)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _split_list(text: str | None, flag: str) -> list[str] | None:
    """The comma-separated names of `--flag`; `None` when it is not given.

    Raises:
        ValueError: it is given but names nothing (`""`, `","`): an empty
            shell variable must not mean "all" or "none".
    """
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"--{flag} names nothing (got {text!r})")
    return names


def _without_xla(model, args):
    """`model`, its train step compiled without XLA if `--no-xla` asks so."""
    if args.no_xla and isinstance(model, keras.Model):
        model.jit_compile = False
    return model


def run_one(experiment, seed: int, dataset, args) -> dict:
    """Trains, evaluates and exports one experiment (the export only where
    `_export_refusal` lets this run replace what the folder holds)."""
    run = f"{experiment.name}_seed{seed}"
    started = datetime.datetime.now(datetime.timezone.utc).isoformat()
    code = code_version()  # the code this process starts (or resumes) it with
    split = _split_of(experiment, seed, dataset)
    split_checksum = split.checksum()
    strategy = args.strategy_object
    epochs = args.epochs or experiment.epochs
    eval_every = args.eval_every or experiment.eval_every
    checkpoints = os.path.join(args.checkpoints_dir, run)
    # `is not None`: an empty EvalSet is falsy, and must not let the test
    # set choose the kept epoch.
    curve_set = split.validation if split.validation is not None else split.test

    def monitor_of(entry):  # a best epoch is kept only on a validation split
        return entry.monitor if split.validation is not None else None

    monitor = monitor_of(experiment)

    def curve_metrics(m):
        return _metrics(evaluate(m, curve_set, experiment.protocol))

    parts = {}
    if experiment.pretrain is not None:

        def train_part(name, model, make_dataset, part_epochs):
            # The parts share the checkpoints of their own runs on this
            # dataset and seed (`--models gmf,mlp,neumf` trains each once),
            # so they are trained as their own entries are: same curve,
            # evaluation schedule, kept epoch and patience.
            part_run = f"{name}_{experiment.dataset}_seed{seed}"
            (entry,) = configs.select([name], [experiment.dataset])
            result = train_model(
                _without_xla(model, args),
                make_dataset,
                args.epochs or part_epochs,
                checkpoint_dir=os.path.join(args.checkpoints_dir, part_run, "main"),
                evaluate=curve_metrics,
                eval_every=args.eval_every or entry.eval_every,
                monitor=monitor_of(entry),
                # No validation set, no best epoch to wait for.
                patience=entry.patience if monitor_of(entry) else None,
                time_budget=args.time_budget,
                progress=not args.quiet,
                description=f"{run}/{name}",
                strategy=strategy,
                fit_epoch=_fit_epoch(strategy, entry),
                data_checksum=split_checksum,
                settings=_run_settings(entry, args.eval_every or entry.eval_every),
            )
            parts[name] = {
                "epochs_run": result.epochs_run,
                "stopped_by": result.stopped_by,
                "best_epoch": result.best,
            }
            return result.model

        model = build_in_scope(
            strategy, lambda: experiment.pretrain(split, seed, train_part)
        )
    else:
        model = build_in_scope(strategy, lambda: experiment.build(split, seed))
    model = _without_xla(model, args)
    training = None
    # A pre-trained part its time budget stopped is continued by the next
    # run; the model is trained only from finished parts (else the next
    # run would resume a model built from parts that have changed since).
    waiting = [
        name for name, part in parts.items() if part["stopped_by"] == "time_budget"
    ]
    if waiting:
        print(
            f"[{run}] not trained: the time budget stopped its pre-trained "
            f"part(s) {', '.join(waiting)}",
            flush=True,
        )
        training = TrainingResult(
            model=model,
            losses=[],
            curve=[],
            epochs_run=0,
            seconds_per_epoch=0.0,
            stopped_by="time_budget",
            resumed_from=0,
        )
        seconds_per_epoch = 0.0
    elif experiment.make_dataset is None:
        begin = time.perf_counter()
        model.fit_closed_form(split.train)
        seconds_per_epoch = time.perf_counter() - begin
    else:
        training = train_model(
            model,
            lambda epoch: experiment.make_dataset(split, seed, epoch),
            epochs,
            checkpoint_dir=os.path.join(checkpoints, "main"),
            evaluate=curve_metrics,
            eval_every=eval_every,
            monitor=monitor,
            patience=experiment.patience if monitor else None,
            evaluate_first=experiment.evaluate_first,
            time_budget=args.time_budget,
            progress=not args.quiet,
            description=run,
            strategy=strategy,
            fit_epoch=_fit_epoch(strategy, experiment),
            data_checksum=split_checksum,
            settings=_run_settings(experiment, eval_every),
        )
        model = training.model
        seconds_per_epoch = training.seconds_per_epoch
    metrics = {}
    for protocol in (experiment.protocol, *experiment.views):
        metrics[protocol] = evaluate(
            model, split.test, protocol, progress=not args.quiet
        )
    heatmap = None
    try:  # SASRec's attention per block (paper Figure 4); None for others
        if is_chief(strategy):  # one writer per cluster
            heatmap = plots.save_attention_heatmap(
                model,
                split.test,
                os.path.join(args.results_dir, f"{run}_attention.png"),
            )
    except ImportError as error:
        heatmap = f"not drawn: {error}"
    # A closed-form fit has no epochs: `--epochs` and `--eval-every` do
    # not apply to it, and are not recorded as if they had.
    by_epochs = experiment.make_dataset is not None
    record = {
        "run": run,
        "config": experiment.record(),
        "seed": seed,
        "epochs_requested": epochs if by_epochs else None,
        "eval_every": eval_every if by_epochs else None,
        "dataset": {
            "name": dataset.name,
            "checksum_sha256": dataset.checksum(),
            "split_sha256": split_checksum,
            "files": list(dataset.files),
            "users": split.num_users,
            "items": split.num_items,
            "train_interactions": len(split.train),
            "test_users": len(split.test),
        },
        "versions": package_versions(),
        "code": code,
        "onednn": onednn_enabled(),
        "metrics": metrics,
        "seconds_per_epoch": seconds_per_epoch,
        "started": started,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command": shlex.join(["train_all.py", *args.argv]),
        "strategy": _strategy_record(args),
        "gpus": _gpus(),
        "jit_compile": bool(getattr(model, "jit_compile", False)),
        "attention_heatmap": heatmap,
    }
    if parts:
        record["pretrained_parts"] = parts
    if training is not None:
        record.update(
            epochs_run=training.epochs_run,
            stopped_by=training.stopped_by,
            best_epoch=training.best,
            resumed_from_epoch=training.resumed_from,
            losses=training.losses,
            curve=training.curve,
            curve_on="validation" if split.validation is not None else "test",
        )
        # The monitored metric, else the first the paper reports.
        metric = plots.curve_metric(
            training.curve, monitor or next(iter(experiment.paper), None)
        )
        try:  # the curve against epochs and wall time
            record["curve_plot"] = (
                plots.save_learning_curve(
                    training.curve,
                    metric,
                    os.path.join(args.results_dir, f"{run}_curve.png"),
                    title=f"{run}: {metric} on {record['curve_on']}",
                    reference=experiment.paper.get(metric),
                )
                if is_chief(strategy)
                else None
            )
        except ImportError as error:
            record["curve_plot"] = f"not drawn: {error}"
    if not args.no_export and is_chief(strategy):
        if record.get("stopped_by") == "time_budget" and not record.get("epochs_run"):
            # An untrained model would replace a trained one's export.
            record["exported"] = "skipped: stopped by the time budget before training"
        else:
            try:
                record["exported"] = _export(
                    model, split, experiment.name, args, record
                )
            except Exception as error:
                raise ExportFailed(f"{type(error).__name__}: {error}") from error
        if isinstance(record["exported"], str):
            print(f"[{run}] export {record['exported']}", flush=True)
    return record


class ExportFailed(RuntimeError):
    """Training and evaluation finished; the export or its check failed."""


def _run_settings(entry, eval_every: int) -> dict:
    """What a resumed run must share with its checkpoint beyond the model:
    the entry's hyperparameters (batch size, negatives, ...) and its
    patience, with the evaluation interval it counts in."""
    settings = {"hyperparameters": entry.hyperparameters, "patience": entry.patience}
    if entry.patience is not None:
        settings["eval_every"] = eval_every
    return settings


def _strategy_record(args) -> dict:
    """The `--strategy` a run trains under, for its results record: the
    name and how many replicas each step's batch is split over."""
    strategy = args.strategy_object
    if strategy is None:
        return {"name": "none", "num_replicas_in_sync": 1}
    return {
        "name": str(args.strategy).lower(),
        "num_replicas_in_sync": int(getattr(strategy, "num_replicas_in_sync", 1)),
    }


def _gpus() -> list[dict]:
    """The GPUs TensorFlow sees (`[]` on a CPU-only machine): each one's
    device name and, where TensorFlow reports them, the card's name and
    compute capability."""
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        entry = {"device": device.name}
        try:
            details = tf.config.experimental.get_device_details(device)
        except (ValueError, RuntimeError, tf.errors.OpError):
            details = {}
        if details.get("device_name"):
            entry["name"] = details["device_name"]
        if details.get("compute_capability"):
            entry["compute_capability"] = list(details["compute_capability"])
        gpus.append(entry)
    return gpus


def _barrier(strategy) -> None:
    """Under several workers, waits until every worker has reached it."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        any_worker(strategy, False)


def _fit_epoch(strategy, experiment):
    """Keras `fit` works under no strategy or MirroredStrategy; several workers
    need the custom loop (Keras `fit` fails there, keras-team/keras#20585)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return DistributedEpoch(
            strategy, experiment.hyperparameters.get("batch_size", 1024)
        )
    return None


def _metrics(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in NON_METRICS}


# key: (name in saved_models/<model>_<dataset>/, is a folder), in the order
# the parts are moved into place: the SavedModel folder TF Serving serves
# last, so that a failure between two moves never has it serve a new model
# beside the old TFLite and `.keras` files.
EXPORTS = {
    "tflite": ("model.tflite", False),
    "keras": ("model.keras", False),
    "saved_model": ("1", True),
}
#: In `saved_models/<model>_<dataset>/`: which run's model the folder holds.
EXPORT_INFO = "export.json"


def _export(model, split, name: str, args, record: dict) -> dict | str:
    """Exports SavedModel + TFLite (+ the `.keras` file) into a hidden staging
    folder, checks both against the Keras model on a sample of users, and
    only then moves each into `saved_models/<name>/`: a failed export or
    parity check leaves the previous export as it was.

    Each move is atomic, the three together are not: the SavedModel folder
    is moved last, and a failure between two moves raises naming the parts
    already replaced (`export.json` then says the folder is mixed, and the
    next export replaces it whole).

    The export runs only where `_export_refusal` lets the run `record`
    describes replace what the folder holds; else it returns why not, as
    `"skipped: ..."`. Each export gets a new `export_id`, kept in the
    record's `exported` and in `export.json`: the files hold a run's model
    exactly while the two ids are equal (a later export of another run
    changes the folder's, not the record's). Exports of one model wait for
    each other (`_export_lock`), so a staging folder found while holding
    the lock is one a killed export left: only those are removed, and a
    SavedModel folder a killed export had moved aside is put back first.
    """
    from keras_rec.export import export_saved_model, export_tflite
    from keras_rec.export.saved_model import restore_interrupted, write_atomically

    os.makedirs(args.saved_models_dir, exist_ok=True)
    target = os.path.abspath(os.path.join(args.saved_models_dir, name))
    info = _export_info(record, args)
    with _export_lock(args.saved_models_dir, name, record["run"]):
        version, _ = EXPORTS["saved_model"]
        if not os.path.exists(os.path.join(target, version)):
            restore_interrupted(target, version)
        existing = _read_export_info(target)
        refusal = _export_refusal(existing, info, args.force)
        if refusal:
            return f"skipped: {target} {refusal}"
        for stale in glob.glob(
            os.path.join(args.saved_models_dir, f".{name}.staging-*")
        ):
            shutil.rmtree(stale, ignore_errors=True)
        staging = tempfile.mkdtemp(
            prefix=f".{name}.staging-", dir=args.saved_models_dir
        )
        try:
            staged = {
                key: os.path.join(staging, entry) for key, (entry, _) in EXPORTS.items()
            }
            seen = split.train.to_csr() if model.input_kind == "user_id" else None
            export_saved_model(model, staged["saved_model"], seen_items=seen)
            export_tflite(model, staged["tflite"], seen_items=seen)
            model.save(staged["keras"])
            parity = export_parity(
                model, split, staged["saved_model"], staged["tflite"], seen
            )
            paths = {
                key: os.path.join(target, entry) for key, (entry, _) in EXPORTS.items()
            }
            previous = existing.get("run") if existing else None
            _write_export_info(
                target,
                {
                    "complete": False,
                    "replacing": previous,
                    "by": info["run"],
                    "export_id": info["export_id"],
                },
            )
            replaced = []
            try:
                for key, (entry, is_directory) in EXPORTS.items():
                    write_atomically(
                        paths[key],
                        lambda path, source=staged[key]: os.rename(source, path),
                        is_directory=is_directory,
                    )
                    replaced.append(entry)
            except BaseException as error:
                message = _mixed_export(target, existing, info, replaced)
                if isinstance(error, Exception):
                    raise RuntimeError(
                        f"{message} ({type(error).__name__}: {error})"
                    ) from error
                raise
            _write_export_info(target, {**info, "files": paths, "parity": parity})
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {
        **paths,
        "parity": parity,
        "info": os.path.join(target, EXPORT_INFO),
        "export_id": info["export_id"],
    }


def _export_info(record: dict, args) -> dict:
    """What `export.json` says of the run `record` describes once its model
    is exported: which run and seed, whether its time budget stopped it,
    its `run_config`, its results file, and the command that wrote it."""
    return {
        "complete": True,
        "export_id": uuid.uuid4().hex,
        "run": record["run"],
        "seed": record["seed"],
        "partial": record.get("stopped_by") == "time_budget",
        "epochs_run": record.get("epochs_run"),
        "run_config": json.loads(json.dumps(run_config(record), default=str)),
        "results": os.path.abspath(
            os.path.join(args.results_dir, f"{record['run']}.json")
        ),
        "run_finished": record["finished"],
        "command": record["command"],
        "command_id": args.command_id,
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }


def _read_export_info(target: str) -> dict | None:
    """The `export.json` of the export folder `target`; `None` when there is
    none (no export yet, or one written before `export.json` existed) or it
    cannot be read."""
    try:
        with open(os.path.join(target, EXPORT_INFO)) as handle:
            info = json.load(handle)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _write_export_info(target: str, info: dict) -> None:
    atomic_write_json(os.path.join(target, EXPORT_INFO), info)


def _export_refusal(existing: dict | None, info: dict, force: bool) -> str:
    """Why the run `info` describes must not replace the export `existing`
    describes ("" if it may), so that the folder holds a well-defined model.

    Of the runs of one configuration (`run_config`), the folder holds the
    lowest seed's model, a finished run's before one its `--time-budget`
    stopped: a run replaces the export of a higher seed, of another seed's
    run its budget stopped (when it is finished itself), and of its own
    seed (its record replaces that run's record, finished or not). It does
    not replace the export of a lower seed or of another configuration,
    except under `--force` when an earlier command wrote it (so `--force
    --seeds 0,1,2` ends with seed 0's if seed 0 succeeds, and `--force
    --seeds 1` leaves seed 1's). A run its budget stopped never replaces
    another, finished run's export, `--force` or not. An export without
    `export.json` (written before it existed, or unreadable), or one a
    failed export left mixed, is replaced.
    """
    if not existing or existing.get("complete") is not True:
        return ""
    if existing.get("run") == info["run"]:
        # Its own seed: the record that export belonged to is being
        # replaced by this run's, finished or not.
        return ""
    held = f"holds {existing.get('run')}'s model"
    if info["partial"] and existing.get("partial") is False:
        return (
            f"{held}, a finished run's: a run its --time-budget stopped does not "
            "replace it"
        )
    earlier = existing.get("command_id") != info["command_id"]
    if force and earlier:
        return ""
    hint = "; --force replaces it" if earlier else ""
    if existing.get("run_config") != info["run_config"]:
        changes = _describe_changes(
            existing.get("run_config") or {}, info["run_config"]
        )
        return f"{held}, of another configuration ({changes}){hint}"
    if existing.get("partial") is True and not info["partial"]:
        return ""
    seed = existing.get("seed")
    if isinstance(seed, int) and seed < info["seed"]:
        return f"{held}, a lower seed of this configuration{hint}"
    return ""


def _mixed_export(target: str, existing: dict | None, info: dict, replaced) -> str:
    """Records in `export.json` which parts of `target` a failed export
    replaced (restoring the previous one where it replaced none; either
    way no export id is left there, so no record's matches); returns the
    message saying so."""
    if not replaced:
        if existing:
            _write_export_info(target, existing)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(target, EXPORT_INFO))
            with contextlib.suppress(OSError):
                os.rmdir(target)  # if nothing else is there
        return (
            f"the export to {target} failed before it replaced any file: the "
            "previous export is as it was"
        )
    kept = [entry for entry, _ in EXPORTS.values() if entry not in replaced]
    hold = "holds" if len(replaced) == 1 else "hold"
    previous = existing.get("run") if existing else None
    parts = {entry: info["run"] for entry in replaced}
    parts.update({entry: previous for entry in kept})
    _write_export_info(target, {"complete": False, "parts": parts})
    return (
        f"the export to {target} stopped midway: {', '.join(replaced)} now "
        f"{hold} {info['run']}'s model, {', '.join(kept)} still the previous "
        f"export's ({EXPORT_INFO} says so; the next export of this model "
        "replaces them all)"
    )


@contextlib.contextmanager
def _export_lock(folder: str, name: str, run: str):
    """Holds `<folder>/.<name>.lock` while `run` exports the model `name`:
    exports of one model (two commands' seeds, say) run one at a time, each
    deciding from what the one before it left, and no live export's
    staging folder is removed (`pid_lock`: a killed export leaves no lock;
    without `fcntl` (Windows) there is none)."""

    def wait(owner: str) -> None:
        print(
            f"[{run}] waiting for another process (pid {owner}) to finish "
            f"its export to {os.path.join(folder, name)}",
            flush=True,
        )

    with pid_lock(os.path.join(folder, f".{name}.lock"), wait):
        yield


def export_parity(model, split, saved: str, tflite: str, seen, k: int = 10) -> dict:
    """Top-k of `serving_default` through `saved_model_cli run` (TF Serving's
    C++ loader) and through LiteRT, against `model.recommend`, on 8 test
    users. Raises if the ids or scores differ."""
    from keras_rec.data.pipelines import pad_histories
    from keras_rec.export import testing

    rows = np.linspace(0, len(split.test) - 1, num=min(8, len(split.test)))
    rows = np.unique(rows.astype(np.int64))
    if model.input_kind == "user_id":
        inputs = {"user_id": split.test.users[rows]}
    else:
        # Whole histories, as a client sends them: a model that reads only
        # its last `history_length` items still excludes them all.
        histories = [split.test.histories[r] for r in rows]
        width = max(len(h) for h in histories)
        inputs = {"item_history": pad_histories(histories, width)}
    expected = testing.expected_recommendations(model, inputs, k, seen)
    request = ("serving_default", inputs)
    report = {"users": len(rows)}
    runs = {"saved_model_cli": lambda: testing.run_saved_model_cli(saved, *request)}
    try:
        import ai_edge_litert  # noqa: F401

        runs["litert"] = lambda: testing.run_tflite(tflite, *request)
    except ImportError:
        report["litert"] = "not checked: ai-edge-litert is not installed"
    for label, run in runs.items():
        actual = run()
        excluded = testing.excluded_items(model, inputs, seen)
        testing.assert_same_top_k(model, inputs, actual, expected, excluded)
        report[label] = {
            "same_ids": bool(np.array_equal(actual["item_ids"], expected[0])),
            "max_abs_score_diff": float(np.max(np.abs(actual["scores"] - expected[1]))),
        }
    return report


def _budget_stopped_seconds(results_path: str, checkpoint: str) -> float | None:
    """Training seconds of a run its time budget stopped, if it can go on.

    `None` when the run finished (its epochs, its patience) or when its
    checkpoint is gone, so there is nothing to continue. A run the budget
    stopped before its first epoch has no checkpoint and nothing to lose:
    0.0, so that it is trained when run again.
    """
    with open(results_path) as handle:
        record = json.load(handle)
    if record.get("stopped_by") != "time_budget":
        return None
    state_path = os.path.join(checkpoint, "main", STATE_FILE)
    if not os.path.exists(state_path):
        return 0.0 if record.get("epochs_run") == 0 else None
    with open(state_path) as handle:
        return float(json.load(handle)["seconds"])


def _partial_without_checkpoint(record: dict, checkpoints_dir: str) -> str:
    """`"N of M epochs"` when `record` is a run its time budget stopped
    after N > 0 epochs and its checkpoint is gone since: it cannot be
    continued, only trained again (`--force`). "" otherwise."""
    if record.get("stopped_by") != "time_budget" or not record.get("epochs_run"):
        return ""
    state = os.path.join(checkpoints_dir, str(record.get("run")), "main", STATE_FILE)
    if os.path.exists(state):
        return ""
    return f"{record['epochs_run']} of {record.get('epochs_requested')} epochs"


def _describe_changes(before: dict, after: dict) -> str:
    """`"key: old then, new now"` for each (flattened) key two run
    configurations differ in."""
    flat_before, flat_after = flatten(before), flatten(after)
    return ", ".join(
        f"{key}: {flat_before.get(key)!r} then, {flat_after.get(key)!r} now"
        for key in differing_keys(before, after)
    )


def _changed_config(results_path: str, experiment, args) -> str:
    """How the finished run in `results_path` was configured differently
    from what this command asks of `experiment` ("" if it was not)."""
    with open(results_path) as handle:
        recorded = run_config(json.load(handle))
    recorded.pop("dataset_sha256")
    by_epochs = experiment.make_dataset is not None
    requested = run_config(
        {
            "config": experiment.record(),
            "epochs_requested": (args.epochs or experiment.epochs)
            if by_epochs
            else None,
            "eval_every": (args.eval_every or experiment.eval_every)
            if by_epochs
            else None,
            "strategy": _strategy_record(args),
        },
        by_epochs=by_epochs,
    )
    requested.pop("dataset_sha256")
    requested = json.loads(json.dumps(requested))  # tuples as lists
    return _describe_changes(recorded, requested)


def _dataset_of(experiment, datasets: dict, args):
    """`experiment`'s dataset, loaded once into the `datasets` cache."""
    if experiment.dataset not in datasets:
        datasets[experiment.dataset] = load_dataset(experiment.dataset, args.data_dir)
    return datasets[experiment.dataset]


def _split_of(experiment, seed: int, dataset):
    """The split `experiment` trains and evaluates on with this `seed`."""
    return make_split(dataset, experiment.protocol, seed, **experiment.split_options)


def _changed_split(path: str, experiment, seed: int, datasets: dict, args) -> str:
    """Names the change if the finished run in `path` recorded another split
    checksum than this seed's split has now (the data file or the splitting
    code changed since); "" if not, or if the record predates the checksum."""
    with open(path) as handle:
        recorded = json.load(handle).get("dataset", {}).get("split_sha256")
    if recorded is None:
        return ""
    now = _split_of(
        experiment, seed, _dataset_of(experiment, datasets, args)
    ).checksum()
    if now == recorded:
        return ""
    return f"split: {recorded[:12]}... then, {now[:12]}... now"


def _seeds(text: str) -> list[int]:
    """The seeds of `--seeds`: comma-separated non-negative integers (the
    data splits and NumPy's generators take no negative seed)."""
    seeds = []
    for item in _split_list(text, "seeds"):
        try:
            seed = int(item)
        except ValueError:
            raise ValueError(
                f"--seeds takes comma-separated integers, got {item!r} in {text!r}"
            ) from None
        if seed < 0:
            raise ValueError(
                f"--seeds takes non-negative integers, got {seed} in {text!r}"
            )
        seeds.append(seed)
    return seeds


def run_config(record: dict, by_epochs: bool | None = None) -> dict:
    """What must be the same for two results to be seeds of one experiment:
    the entry's config (not the paper's numbers, nor the extra protocols
    reported), the data, for a run trained by epochs the epochs requested
    and the evaluation interval, and a `--strategy` other than none.

    `by_epochs`: whether the run trains by epochs; by default, whether the
    record has `epochs_run` (closed-form fits never record it; they ignore
    `--epochs` and `--eval-every`, which older records of theirs still
    hold). A record without `strategy` (written before it was recorded)
    counts as one under none.
    """
    config = {k: v for k, v in record["config"].items() if k not in ("paper", "views")}
    key = {
        "config": config,
        "dataset_sha256": record.get("dataset", {}).get("checksum_sha256"),
    }
    if by_epochs is None:
        by_epochs = "epochs_run" in record
    if by_epochs:
        key["epochs_requested"] = record.get("epochs_requested")
        key["eval_every"] = record.get("eval_every")
    strategy = record.get("strategy")
    if isinstance(strategy, dict) and strategy.get("name", "none") != "none":
        key["strategy"] = strategy
    return key


RECORD_KEYS = ("run", "metrics", "seconds_per_epoch", "config")
CONFIG_KEYS = ("model", "dataset", "protocol", "paper", "views")


def _is_number(value) -> bool:
    """A finite real number (a bool is not one, nor is NaN)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _check_record(record) -> None:
    """Raises `ValueError` naming what the table needs and `record` lacks:
    a key (all of them, if it is not a dict), a `metrics` mapping of
    protocols each mapping to finite numbers (bools refused), a numeric
    `seconds_per_epoch`, names where names go, the paper's numbers as
    numbers, and a whole number of epochs for a run its budget stopped."""
    if not isinstance(record, dict):
        missing = list(RECORD_KEYS)
    else:
        missing = [key for key in RECORD_KEYS if key not in record]
        config = record.get("config")
        if isinstance(config, dict):
            missing += [f"config.{key}" for key in CONFIG_KEYS if key not in config]
        elif "config" not in missing:
            missing.append("config")
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    if not isinstance(record["metrics"], dict) or not _is_number(
        record["seconds_per_epoch"]
    ):
        raise ValueError(
            "`metrics` is not a mapping or `seconds_per_epoch` not a number"
        )
    for protocol, values in record["metrics"].items():
        if not isinstance(values, dict):
            raise ValueError(f"`metrics.{protocol}` is not a mapping: {values!r}")
        bad = {k: v for k, v in values.items() if not _is_number(v)}
        if bad:
            raise ValueError(
                f"`metrics.{protocol}` holds values that are not finite numbers: "
                + ", ".join(f"{k}={v!r}" for k, v in bad.items())
            )
    config = record["config"]
    names = [record["run"], *(config[key] for key in ("model", "dataset", "protocol"))]
    views = config["views"]
    if not all(isinstance(name, str) for name in names) or not (
        isinstance(views, list) and all(isinstance(view, str) for view in views)
    ):
        raise ValueError(
            "`run`, `config.model`, `config.dataset` or `config.protocol` is not "
            "a name, or `config.views` not a list of names"
        )
    paper = config["paper"]
    if not isinstance(paper, dict) or not all(map(_is_number, paper.values())):
        raise ValueError("`config.paper` is not a mapping of metrics to numbers")
    epochs_run = record.get("epochs_run")
    if record.get("stopped_by") == "time_budget" and not (
        isinstance(epochs_run, int)
        and not isinstance(epochs_run, bool)
        and epochs_run >= 0
    ):
        raise ValueError(
            "`stopped_by` is time_budget but `epochs_run` is not a whole number "
            f"of epochs: {epochs_run!r}"
        )


def write_table(results_dir: str, checkpoints_dir: str | None = None) -> str:
    """Rebuilds `RESULTS.md` from every results JSON in `results_dir`.

    Runs are averaged over seeds only when their `run_config` is the same.
    A (model, dataset) run with several configs (an old `--epochs 1` run,
    edited hyperparameters) gets one set of rows per config, labelled
    `[a]`, `[b]`, ..., and the differences are listed under the table.
    Runs their `--time-budget` stopped before their last epoch are not
    averaged with finished ones: they get rows of their own, one set per
    number of epochs run, labelled `(partial, N epochs)`, and are listed
    under the table: as runs a larger budget continues, or, when
    `checkpoints_dir` is given and their checkpoint is gone from it, as runs
    only `--force` trains again.
    """
    # (model, dataset) -> run config -> epochs a budget stopped it after
    # (None: finished) -> its seeds' records, in the order first seen.
    groups: dict[tuple, dict[str, dict[int | None, list[dict]]]] = {}
    skipped = []  # other JSON files in the folder, named under the table
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        try:
            with open(path) as handle:
                record = json.load(handle)
            _check_record(record)
            variant = (record["config"]["model"], record["config"]["dataset"])
            config = json.dumps(run_config(record), sort_keys=True)
            stopped = record.get("stopped_by") == "time_budget"
            stop = record.get("epochs_run") if stopped else None
        except (ValueError, TypeError, AttributeError) as error:
            skipped.append(
                f"{os.path.basename(path)} ({type(error).__name__}: {error})"
            )
            continue
        configs = groups.setdefault(variant, {})
        configs.setdefault(config, {}).setdefault(stop, []).append(record)
    rows = []
    notes = []
    for (model, dataset), configs in sorted(groups.items()):
        labelled = len(configs) > 1
        differences = differing_keys(*(json.loads(c) for c in configs))
        for index, (config, stops) in enumerate(configs.items()):
            label = f"{model} [{chr(ord('a') + index)}]" if labelled else model
            records = []
            # Finished runs first, then partial ones by their epochs.
            for stop in sorted(stops, key=lambda e: (e is not None, e or 0)):
                group = stops[stop]
                suffix = "" if stop is None else f" (partial, {stop} epochs)"
                rows += _table_rows(label + suffix, dataset, group)
                records += group
            if labelled:
                flat = flatten(json.loads(config))
                settings = ", ".join(f"{k}={flat.get(k)!r}" for k in differences)
                runs = ", ".join(r["run"] for r in records)
                notes.append(f"- {label} on {dataset}: {settings} ({runs})")
    text = "# Results\n\nWritten by `train_all.py`; every number is measured.\n\n"
    text += markdown_table(rows)
    if notes:
        text += (
            "\nRuns of one model and dataset with different configurations are not"
            " averaged together; their rows are labelled:\n\n" + "\n".join(notes) + "\n"
        )
    partial, gone = [], []
    for r in (
        r
        for configs in groups.values()
        for stops in configs.values()
        for records in stops.values()
        for r in records
        if r.get("stopped_by") == "time_budget"
    ):
        epochs = f"{r['run']} ({r['epochs_run']} of {r['epochs_requested']} epochs)"
        if checkpoints_dir is not None and _partial_without_checkpoint(
            r, checkpoints_dir
        ):
            gone.append(epochs)
        else:
            partial.append(epochs)
    if partial:
        text += (
            "\nStopped by `--time-budget` before their last epoch, in the rows"
            " labelled (partial, N epochs) (run them again with a larger budget"
            " to continue): " + ", ".join(partial) + ".\n"
        )
    if gone:
        text += (
            "\nStopped by `--time-budget` before their last epoch, in the rows"
            " labelled (partial, N epochs), and their checkpoints are gone, so"
            " they cannot be continued (`--force` trains them again from the"
            " start): " + ", ".join(gone) + ".\n"
        )
    if skipped:
        text += (
            "\nNot read (not a results record, or a damaged one): "
            + "; ".join(skipped)
            + ".\n"
        )
        print(f"RESULTS.md: skipped {'; '.join(skipped)}", file=sys.stderr)
    path = os.path.join(results_dir, "RESULTS.md")
    atomic_write_text(path, text)
    return path


def _table_rows(model: str, dataset: str, records: list[dict]) -> list[dict]:
    """The table's rows of the seeds `records` of one config."""
    main = records[0]["config"]["protocol"]
    paper = records[0]["config"]["paper"]
    views = [v for r in records for v in r["config"]["views"]]
    protocols = list(dict.fromkeys([main, *views]))
    spe = sum(r["seconds_per_epoch"] for r in records) / len(records)
    rows = []
    for protocol in protocols:
        per_seed = [
            {"metrics": _metrics(r["metrics"].get(protocol, {}))} for r in records
        ]
        for metric, stats in summarize_seeds(per_seed).items():
            rows.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "protocol": protocol,
                    "metric": metric,
                    **stats,
                    "paper": paper.get(metric) if protocol == main else None,
                    "seconds_per_epoch": spe,
                }
            )
    return rows


def _remove_checkpoint(
    checkpoint: str, strategy, run: str, keep_lock: bool = True
) -> None:
    """Deletes the run's checkpoint folder `checkpoint` (`checkpoints/<run>`)
    while holding the lock a training process holds on it, so a folder
    another process trains from is never removed from under it.

    Everything is deleted but the lock file `main/.lock` itself (unless
    `keep_lock` is false): a process that opened it meanwhile locks the same
    file, not a new one beside a second trainer's.

    Raises:
        CheckpointInUseError: another process holds the lock (is training
            this run); nothing is deleted.
    """
    if not os.path.isdir(checkpoint):
        return
    main_dir = os.path.join(checkpoint, "main")
    with _checkpoint_lock(main_dir, strategy, run):
        for folder, keep in ((checkpoint, "main"), (main_dir, LOCK_FILE)):
            for entry in os.listdir(folder):
                if entry == keep:
                    continue
                remove_path(os.path.join(folder, entry))
        if not keep_lock:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(main_dir, LOCK_FILE))
                os.rmdir(main_dir)
                os.rmdir(checkpoint)


def _listed(models: list[str] | None, datasets: list[str] | None) -> list:
    """The entries `--list` prints: every one, or those of the models and
    datasets named (any dataset when only `--models` is given).

    Raises:
        ValueError: as `configs.select`, when the names select nothing (an
            unknown name, or no entry of those models on those datasets).
    """
    listed = [
        e
        for e in configs.EXPERIMENTS
        if (models is None or e.model in models)
        and (datasets is None or e.dataset in datasets)
    ]
    if models is not None or datasets is not None:
        # The same checks (and messages) as a run's: unknown names, and a
        # named model or dataset that none of the other names has.
        named = datasets or sorted({e.dataset for e in listed}) or None
        configs.select(models, named)
    return listed


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    args = parse_args(argv)
    args.argv = argv  # the record's `command`: what was parsed, not sys.argv
    # Tells this command's exports from earlier ones' (`_export_refusal`).
    args.command_id = uuid.uuid4().hex
    for flag in ("epochs", "eval_every"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(
                f"--{flag.replace('_', '-')} must be at least 1, got {value}"
            )
    if args.time_budget is not None and not args.time_budget > 0:
        raise ValueError(
            "--time-budget must be a positive number of seconds (leave it out for "
            f"no limit), got {args.time_budget}"
        )
    args.seed_list = _seeds(args.seeds)
    models = _split_list(args.models, "models")
    dataset_names = _split_list(args.datasets, "datasets")
    # Before any other TensorFlow op: collective ops are set up at start-up.
    args.strategy_object = make_strategy(args.strategy)
    if args.list:
        for e in _listed(models, dataset_names):
            print(f"{e.model:12s} {e.dataset:12s} {e.protocol:22s} epochs={e.epochs}")
        return 0
    experiments = configs.select(models, dataset_names)
    if is_chief(args.strategy_object):
        os.makedirs(args.results_dir, exist_ok=True)
    datasets = {}
    failures = []
    # Runs another entry pre-trains from keep their checkpoints (see
    # `Experiment.pretrain_parts`).
    parts = {
        f"{part}_{e.dataset}" for e in configs.EXPERIMENTS for part in e.pretrain_parts
    }
    for experiment in experiments:
        for seed in args.seed_list:
            run = f"{experiment.name}_seed{seed}"
            path = os.path.join(args.results_dir, f"{run}.json")
            checkpoint = os.path.join(args.checkpoints_dir, run)
            if os.path.exists(path) and not args.force:
                try:  # a damaged results file, or data missing to check it
                    spent = _budget_stopped_seconds(path, checkpoint)
                    changed = gone = None
                    if spent is None:
                        with open(path) as handle:
                            gone = _partial_without_checkpoint(
                                json.load(handle), args.checkpoints_dir
                            )
                    if spent is None and not gone:
                        changed = _changed_config(path, experiment, args)
                        if not changed:
                            changed = _changed_split(
                                path, experiment, seed, datasets, args
                            )
                except (
                    OSError,
                    ValueError,
                    KeyError,
                    TypeError,
                    AttributeError,
                ) as error:
                    print(
                        f"[{run}] FAILED: its earlier results {path} could not be "
                        f"checked ({type(error).__name__}: {error}); fix that, or "
                        "use --force to redo the run",
                        file=sys.stderr,
                    )
                    failures.append(run)
                    continue
                if gone:
                    print(
                        f"[{run}] partial ({gone}: its --time-budget stopped it) "
                        f"and its checkpoint {checkpoint} is gone, so it cannot be "
                        f"continued: its results in {path} are kept; use --force "
                        "to train it again"
                    )
                    continue
                if spent is None:
                    if changed:
                        print(
                            f"[{run}] finished earlier with another configuration "
                            f"({changed}): its results in {path} are kept; use "
                            "--force to redo it with this one"
                        )
                    else:
                        print(f"[{run}] finished earlier: {path} (use --force to redo)")
                    continue
                # A budget not above the seconds spent would stop the run
                # again before its next epoch, having trained nothing.
                if args.time_budget is not None and spent >= args.time_budget:
                    print(
                        f"[{run}] stopped earlier by its time budget after "
                        f"{spent:.0f} s of training; pass a larger --time-budget "
                        f"(or none) to continue it from {checkpoint}"
                    )
                    continue
                if spent:
                    print(f"[{run}] continuing the run its time budget stopped")
                else:
                    print(f"[{run}] training the run its time budget stopped early")
            print(f"[{run}] {experiment.protocol} ...", flush=True)
            try:  # a missing or malformed data file fails this run only
                if args.force and os.path.exists(path):
                    # --force redoes a finished run (or one its budget
                    # stopped) from scratch, NeuMF's pre-trained parts
                    # included (their entries come first, so NeuMF starts
                    # from the new ones); an interrupted run (no results
                    # yet) resumes. A checkpoint another process trains
                    # from is not removed: the run fails as it would when
                    # training.
                    in_use = None
                    if is_chief(args.strategy_object):
                        try:
                            _remove_checkpoint(checkpoint, args.strategy_object, run)
                        except CheckpointInUseError as error:
                            in_use = error
                    # A barrier: the other workers look for a checkpoint
                    # once it is gone, and all of them give the run up if
                    # the chief could not remove it (rather than wait).
                    if _agreed(args.strategy_object, in_use is not None):
                        raise in_use or CheckpointInUseError(
                            f"{run}: the chief could not remove {checkpoint}: "
                            "another process trains from it"
                        )
                dataset = _dataset_of(experiment, datasets, args)
                record = run_one(experiment, seed, dataset, args)
            except Exception as error:  # the other runs go on
                if isinstance(
                    args.strategy_object, tf.distribute.MultiWorkerMirroredStrategy
                ):
                    # An error on one worker only (the chief's checkpoint
                    # files) would leave it alone to go on: stop them all.
                    raise
                if isinstance(
                    error,
                    FloatingPointError
                    | ValueError
                    | FileNotFoundError
                    | CheckpointInUseError,
                ):
                    print(f"[{run}] FAILED: {error}", file=sys.stderr)
                else:  # a bug or a failed export check
                    traceback.print_exc()
                    print(f"[{run}] FAILED (traceback above)", file=sys.stderr)
                if isinstance(error, ExportFailed) and os.path.isdir(checkpoint):
                    # The trained model is not lost: its results need no
                    # retraining.
                    print(
                        f"[{run}] its checkpoint is kept in {checkpoint}: the same "
                        "command resumes it from its last saved epoch (add "
                        "--no-export to leave the export out)",
                        file=sys.stderr,
                    )
                failures.append(run)
                continue
            if is_chief(args.strategy_object):  # one writer per cluster
                atomic_write_json(path, record)
            if record.get("stopped_by") == "time_budget" and not record["epochs_run"]:
                print(
                    f"[{run}] stopped by the time budget before its first epoch "
                    "(or before its pre-trained parts finished): these metrics are "
                    "the untrained model's; run again with a "
                    "larger --time-budget (or none) to train it",
                    flush=True,
                )
            elif record.get("stopped_by") == "time_budget":
                print(
                    f"[{run}] stopped by the time budget after "
                    f"{record['epochs_run']} of {record['epochs_requested']} epochs; "
                    f"checkpoint kept in {checkpoint}: run again with a larger "
                    "--time-budget (or none) to continue",
                    flush=True,
                )
            elif experiment.name not in parts and is_chief(args.strategy_object):
                try:
                    _remove_checkpoint(
                        checkpoint, args.strategy_object, run, keep_lock=False
                    )
                except CheckpointInUseError as error:
                    print(f"[{run}] its checkpoint is left in place: {error}")
            summary = ", ".join(
                f"{k}={v:.4f}"
                for k, v in _metrics(record["metrics"][experiment.protocol]).items()
            )
            print(f"[{run}] {summary}  ->  {path}", flush=True)
    if not is_chief(args.strategy_object):
        return 1 if failures else 0
    table = write_table(args.results_dir, args.checkpoints_dir)
    print(f"table: {table}")
    if failures:
        print(f"failed runs: {failures}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

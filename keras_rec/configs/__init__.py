"""The papers' hyperparameters as plain Python: one `Experiment` per
(model, dataset). `train_all.py` selects entries from `EXPERIMENTS`.

An experiment says how to build (and compile) its model for a split, which
training pipeline feeds it each epoch, for how long, which protocols to
report, and the paper's numbers to put beside ours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf

from keras_rec.data.splits import Split


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One reproduction entry.

    Args:
        model: short model name (what `--models` selects), e.g. `"bpr_mf"`.
        dataset: dataset name for `keras_rec.data.load_dataset`.
        protocol: the paper's protocol (`loo_sampled`, `holdout_full`, ...).
        build: `(split, seed) -> compiled model`.
        make_dataset: `(split, seed, epoch) -> tf.data.Dataset`, or `None`
            for closed-form models (`model.fit_closed_form(split.train)`).
        epochs: training epochs.
        hyperparameters: recorded in the results file.
        paper: the paper's numbers, `{"recall@20": 0.1830, ...}`.
        views: protocols reported in addition to `protocol` (e.g. the
            full-ranking view beside the sampled one).
        eval_every: epochs between evaluations for the learning curve.
        monitor: validation metric to keep the best epoch by (needs a
            validation set in the split); `None` reports the last epoch.
        patience: evaluations without improvement before stopping.
        evaluate_first: evaluate before the first epoch too, so that the
            starting weights (pre-trained parts) can be the best epoch.
        split_options: keyword arguments for `make_split`.
        pretrain: optional `(split, seed, train) -> compiled model` used
            instead of `build` when the model starts from other trained
            models (NeuMF from GMF and MLP). `train(name, model,
            make_dataset, epochs)` trains a sub-model and returns it.
        pretrain_parts: the models `pretrain` trains (`("gmf", "mlp")`).
            A part is the same run as that model's own entry on the dataset
            and seed, so the two share checkpoints: whichever runs first
            trains it, and its checkpoints are kept for the other.
    """

    model: str
    dataset: str
    protocol: str
    build: Callable[[Split, int], keras.Model]
    make_dataset: Callable[[Split, int, int], tf.data.Dataset] | None
    epochs: int = 1
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    paper: dict = dataclasses.field(default_factory=dict)
    views: tuple[str, ...] = ()
    eval_every: int = 1
    monitor: str | None = None
    patience: int | None = None
    evaluate_first: bool = False
    split_options: dict = dataclasses.field(default_factory=dict)
    pretrain: Callable | None = None
    pretrain_parts: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.model}_{self.dataset}"

    def record(self) -> dict:
        """The JSON-able part of the config for the results file."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "views": list(self.views),
            "epochs": self.epochs,
            "eval_every": self.eval_every,
            "monitor": self.monitor,
            "patience": self.patience,
            "evaluate_first": self.evaluate_first,
            "hyperparameters": dict(self.hyperparameters),
            "split_options": dict(self.split_options),
            "paper": dict(self.paper),
        }


def _collect() -> list[Experiment]:
    from keras_rec.configs import (
        autoencoders,
        autoencoders_recvae_vasp,
        baselines,
        graph,
        ncf,
        sasrec,
    )

    return [
        *baselines.EXPERIMENTS,
        *ncf.EXPERIMENTS,
        *sasrec.EXPERIMENTS,
        *graph.EXPERIMENTS,
        *autoencoders.EXPERIMENTS,
        *autoencoders_recvae_vasp.EXPERIMENTS,
    ]


EXPERIMENTS: list[Experiment] = _collect()


def select(
    models: list[str] | None = None, datasets: list[str] | None = None
) -> list[Experiment]:
    """Entries matching `models` and `datasets`.

    `models=None` selects every model, `datasets=None` the synthetic data.
    Each requested model must have an entry on at least one requested
    dataset, and each requested dataset one for at least one requested
    model: nothing asked for is dropped without a word.

    Raises:
        ValueError: an empty list; a name matches no entry (the message lists
            the known ones); a requested model has no entry on any requested
            dataset (the message lists the datasets it has), or a requested
            dataset none for any requested model.
    """
    if models is not None and not models:
        raise ValueError("No model requested (an empty list); None selects all")
    if datasets is not None and not datasets:
        raise ValueError("No dataset requested (an empty list)")
    datasets = datasets or ["synthetic"]
    known_models = sorted({e.model for e in EXPERIMENTS})
    known_datasets = sorted({e.dataset for e in EXPERIMENTS})
    for name in models or []:
        if name not in known_models:
            raise ValueError(f"Unknown model {name!r}. Known: {known_models}")
    for name in datasets:
        if name not in known_datasets:
            raise ValueError(f"Unknown dataset {name!r}. Known: {known_datasets}")
    chosen = [
        e
        for e in EXPERIMENTS
        if (models is None or e.model in models) and e.dataset in datasets
    ]
    for name in models or []:
        if not any(e.model == name for e in chosen):
            has = sorted({e.dataset for e in EXPERIMENTS if e.model == name})
            raise ValueError(
                f"Model {name!r} has no entry on the requested datasets "
                f"{datasets}; it has entries on {has}"
            )
    for name in datasets:
        if not any(e.dataset == name for e in chosen):
            has = sorted({e.model for e in EXPERIMENTS if e.dataset == name})
            raise ValueError(
                f"Dataset {name!r} has no entry for the requested models "
                f"{models}; it has entries for {has}"
            )
    return chosen

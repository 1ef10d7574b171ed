"""SASRec (Kang & McAuley, ICDM 2018): the paper's settings per dataset.

Paper and reference code (github.com/kang205/SASRec): d = 50, 2 blocks, 1
head, Adam (lr 0.001, beta_2 0.98), batch 128, one negative per position
re-drawn every epoch, 201 epochs with evaluation every 20, no L2 on the
embeddings (`l2_emb=0.0`); maxlen 50 and dropout 0.5 on the sparse Amazon
data, maxlen 200 and dropout 0.2 on MovieLens-1M. Evaluation: the latest
item is the test item, the second latest validation, ranked against 100
uniformly drawn unseen items (`loo_sampled`), beside full ranking
(`loo_full`).

Length bucketing (`bucket_by_length`, on for Games and Beauty): the
reference code pads every sequence to `maxlen`, and on the Amazon data
(mean training length about 6 of `maxlen = 50`) almost all of the attention
and FFN work is on padding. With bucketing, each epoch's users are shuffled,
sorted by length within windows of 32 batches, and each batch is cropped to
its longest sequence (`sequence_dataset(..., bucket_by_length=True)`); the
model's outputs at the items are unchanged (positions are aligned to the
most recent item). The same sequences and negatives are seen per epoch, but
batches are no longer uniform draws, so the loss is the batch's sum over
non-padding positions divided by a constant, the expected number of such
positions in a random batch (`SampledBinaryCrossentropy(normalizer=
expected_valid_positions(...))`), instead of the batch mean: every position
weighs the same and the expected gradient per epoch is the paper's.
MovieLens (`maxlen = 200`, long sequences) keeps the reference's padded
batches and per-batch mean; `bucket_by_length=False` gives them anywhere.
"""

from __future__ import annotations

import keras

from keras_rec.configs import Experiment
from keras_rec.data.pipelines import expected_valid_positions, sequence_dataset
from keras_rec.losses.sampled_bce import SampledBinaryCrossentropy
from keras_rec.models.sasrec import SASRec

PAPER_GAMES = {"hr@10": 0.7410, "ndcg@10": 0.5360}
PAPER_ML1M = {"hr@10": 0.8245, "ndcg@10": 0.5905}


def sasrec(
    maxlen: int,
    hidden_dim: int,
    num_blocks: int,
    num_heads: int,
    dropout_rate: float,
    learning_rate: float,
    batch_size: int = 128,
    bucket_by_length: bool = False,
):
    """`(split, seed) -> compiled SASRec` with the paper's optimizer; the
    loss divides by the expected count of non-padding positions per batch of
    `batch_size` when the batches are bucketed by length."""

    def build(split, seed):
        model = SASRec(
            split.num_items,
            maxlen=maxlen,
            hidden_dim=hidden_dim,
            num_blocks=num_blocks,
            num_heads=num_heads,
            dropout_rate=dropout_rate,
            seed=seed,
        )
        normalizer = (
            expected_valid_positions(split.train, maxlen, batch_size)
            if bucket_by_length
            else None
        )
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate, beta_2=0.98),
            loss=SampledBinaryCrossentropy(normalizer=normalizer),
        )
        return model

    return build


def sequences(maxlen: int, batch_size: int, bucket_by_length: bool = False):
    """`(split, seed, epoch) -> tf.data.Dataset` of SASRec training sequences."""

    def make(split, seed, epoch):
        return sequence_dataset(
            split.train,
            maxlen,
            batch_size,
            seed=seed,
            epoch=epoch,
            bucket_by_length=bucket_by_length,
        )

    return make


def _entry(
    dataset: str,
    protocol: str,
    epochs: int,
    *,
    maxlen: int = 50,
    dropout_rate: float = 0.5,
    hidden_dim: int = 50,
    num_blocks: int = 2,
    num_heads: int = 1,
    learning_rate: float = 1e-3,
    batch_size: int = 128,
    bucket_by_length: bool = False,
    eval_every: int = 20,
    paper: dict | None = None,
    views: tuple[str, ...] = (),
    split_options: dict | None = None,
) -> Experiment:
    return Experiment(
        model="sasrec",
        dataset=dataset,
        protocol=protocol,
        build=sasrec(
            maxlen,
            hidden_dim,
            num_blocks,
            num_heads,
            dropout_rate,
            learning_rate,
            batch_size,
            bucket_by_length,
        ),
        make_dataset=sequences(maxlen, batch_size, bucket_by_length),
        epochs=epochs,
        hyperparameters={
            "maxlen": maxlen,
            "hidden_dim": hidden_dim,
            "num_blocks": num_blocks,
            "num_heads": num_heads,
            "dropout_rate": dropout_rate,
            "learning_rate": learning_rate,
            "beta_2": 0.98,
            "batch_size": batch_size,
            "optimizer": "Adam",
            "negatives_per_position": 1,
            "l2_emb": 0.0,
            "bucket_by_length": bucket_by_length,
            "loss_normalizer": (
                "expected non-padding positions per random batch"
                if bucket_by_length
                else "non-padding positions of the batch"
            ),
        },
        paper=paper or {},
        views=views,
        eval_every=eval_every,
        monitor="ndcg@10",
        split_options=split_options or {},
    )


SAMPLED_100 = {"num_negatives": 100}

EXPERIMENTS = [
    # The default run: a few epochs on the built-in data, well under 20 s.
    _entry(
        "synthetic",
        "loo_sampled",
        6,
        dropout_rate=0.2,
        learning_rate=5e-3,
        eval_every=6,
        views=("loo_full",),
        split_options=SAMPLED_100,
    ),
    _entry(
        "games",
        "loo_sampled",
        200,
        bucket_by_length=True,
        paper=PAPER_GAMES,
        views=("loo_full",),
        split_options=SAMPLED_100,
    ),
    # S3-Rec's 5-core Beauty, not the paper's version: full ranking only.
    _entry("beauty", "loo_full", 200, bucket_by_length=True),
    # Leave-one-out by time needs GroupLens' `ml-1m/ratings.dat` (with
    # timestamps): `make_split` refuses it on `ml-1m/interactions.dat`, which
    # has none and whose row order is not time order. SASRec (section IV.A)
    # drops users and items with fewer than 5 actions, once: on ML-1M that
    # keeps 3,416 of its 3,706 items (the paper's Table II) and every user.
    _entry(
        "ml-1m",
        "loo_sampled",
        200,
        maxlen=200,
        dropout_rate=0.2,
        paper=PAPER_ML1M,
        views=("loo_full",),
        split_options={
            **SAMPLED_100,
            "min_user_interactions": 5,
            "min_item_interactions": 5,
        },
    ),
    _entry(
        "ml-100k",
        "loo_sampled",
        200,
        maxlen=200,
        dropout_rate=0.2,
        views=("loo_full",),
        split_options=SAMPLED_100,
    ),
]

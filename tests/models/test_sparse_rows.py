"""`sparse_rows` in every autoencoder with a first layer on the user rows:
the same model trained, the sparse product in the training graph only."""

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rec.layers.sparse_rows_dense import SparseRowsDense
from keras_rec.losses.focal import FocalLoss
from keras_rec.models.flvae import FLVAE
from keras_rec.models.mult_vae import MultDAE, MultVAE
from keras_rec.models.recvae import RecVAE, alternating_rows_dataset
from keras_rec.models.vasp import VASP, split_brain_dataset

SMALL = {"hidden_dim": 16, "latent_dim": 4}


def _recvae(split, sparse, dropout_rate=0.0):
    # Without dropout by default: the sparse path draws its masks over the
    # nonzeros, so with dropout the two paths' masks (not their law) differ.
    model = RecVAE(
        split.num_items,
        num_layers=2,
        seed=0,
        sparse_rows=sparse,
        dropout_rate=dropout_rate,
        **SMALL,
    )
    model.compile(optimizer=keras.optimizers.Adam(5e-3))
    return model, lambda rows: alternating_rows_dataset(rows, 64, 0, 0)


def _focal(cls):
    def build(split, sparse):
        model = cls(
            split.num_items,
            encoder_layers=2,
            decoder_layers=2,
            seed=0,
            sparse_rows=sparse,
            **SMALL,
        )
        model.compile(optimizer=keras.optimizers.Nadam(2e-3), loss=FocalLoss())
        return model, lambda rows: split_brain_dataset(rows, 64, 0, 0)

    return build


BUILDERS = {"recvae": _recvae, "flvae": _focal(FLVAE), "vasp": _focal(VASP)}


def _first_layer(model):
    encoder = model.encoder if isinstance(model, RecVAE) else model.get_layer("encoder")
    body = encoder.body if isinstance(model, RecVAE) else encoder
    return body, body.dense_layers[0]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_sparse_rows_trains_the_same_model(name, heldout_split, heldout_rows):
    (dense, dataset), (sparse, _) = (
        BUILDERS[name](heldout_split, flag) for flag in (False, True)
    )
    assert isinstance(_first_layer(sparse)[1], SparseRowsDense)
    assert not isinstance(_first_layer(dense)[1], SparseRowsDense)
    sparse.set_weights(dense.get_weights())  # RecVAE's kernels are unseeded
    for model in (dense, sparse):
        model.fit(dataset(heldout_rows), verbose=0)
    for mine, theirs in zip(sparse.weights, dense.weights, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=5e-5)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_sparse_product_only_in_training(name, heldout_split, heldout_rows):
    model, _ = BUILDERS[name](heldout_split, True)
    body, _ = _first_layer(model)
    rows = tf.constant(heldout_rows[:8].toarray(), tf.float32)
    for training, expected in ((True, True), (False, False)):
        # `training` reaches the nested first layer through Keras's call
        # context, as in `fit` and in RecVAE's phases.
        graph = tf.function(lambda x, t=training: body(x, training=t))
        ops = graph.get_concrete_function(rows).graph.get_operations()
        assert any(op.type == "SparseTensorDenseMatMul" for op in ops) == expected


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_sparse_rows_config_round_trip(name, heldout_split):
    model, _ = BUILDERS[name](heldout_split, True)
    config = json.loads(json.dumps(model.get_config()))
    clone = type(model).from_config(config)
    assert clone.get_config() == model.get_config()
    assert isinstance(_first_layer(clone)[1], SparseRowsDense)


def _ops(function, *args):
    return tf.function(function).get_concrete_function(*args).graph.get_operations()


def _row_products(operations, num_items):
    """Dense products of `[B, num_items]` rows with a `[num_items, H]` kernel."""
    return [
        op
        for op in operations
        if op.type == "MatMul"
        and op.inputs[0].shape[-1] == num_items
        and op.inputs[1].shape[0] == num_items
        and not op.get_attr("transpose_a")
        and not op.get_attr("transpose_b")
    ]


@pytest.mark.parametrize("encoder_phase", [True, False])
def test_recvae_phases_never_multiply_dense_rows(
    encoder_phase, heldout_split, heldout_rows
):
    # The decoder phase and the composite prior run the encoders without
    # dropout (`training=False`); they must still take the sparse product.
    model, _ = _recvae(heldout_split, True, dropout_rate=0.5)
    rows = tf.constant(heldout_rows[:8].toarray(), tf.float32)
    operations = _ops(lambda x: model._phase_step(x, encoder_phase), rows)
    forward = [
        op.name
        for op in operations
        if op.type == "SparseTensorDenseMatMul"
        and not op.name.startswith("gradient_tape/")
    ]
    assert len(forward) == 2  # the encoder and the prior's old encoder
    assert _row_products(operations, heldout_split.num_items) == []
    # Scoring (and so the exports) keeps the dense product.
    scoring = _ops(lambda x: model(x, training=False), rows)
    assert len(_row_products(scoring, heldout_split.num_items)) == 1


def test_recvae_sparse_encoder_equals_dense_without_dropout(
    heldout_split, heldout_rows
):
    model, _ = _recvae(heldout_split, True, dropout_rate=0.5)
    rows = tf.constant(heldout_rows[:16].toarray(), tf.float32)
    dense = model.encoder(rows, training=False, sparse_product=False)
    sparse = model.encoder(rows, training=False, sparse_product=True)
    for mine, theirs in zip(sparse, dense, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("name", ["mult_vae", "mult_dae", *sorted(BUILDERS)])
def test_sparse_rows_models_are_not_jit_compiled(name, sparse):
    # Keras' "auto" turns XLA on where a GPU is visible; XLA has no kernels
    # for the sparse ops, so a model holding a SparseRowsDense must refuse it.
    split = type("Split", (), {"num_items": 12})()
    if name in BUILDERS:
        model, _ = BUILDERS[name](split, sparse)
    else:
        cls = MultVAE if name == "mult_vae" else MultDAE
        model = cls(12, hidden_dims=(8,), latent_dim=4, sparse_rows=sparse, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.compile(optimizer="adam", loss=FocalLoss(), jit_compile=True)
    assert model.jit_compile is (not sparse)

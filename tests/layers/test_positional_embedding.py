import json

import keras
import numpy as np
import pytest

from keras_rec.layers.positional_embedding import PositionalEmbedding


def test_output_shape_and_weight_shape():
    layer = PositionalEmbedding(sequence_length=7)
    assert layer(np.zeros((2, 7, 3), np.float32)).shape == (2, 7, 3)
    assert layer.embeddings.shape == (7, 3)
    assert layer.compute_output_shape((None, 7, 3)) == (None, 7, 3)


def test_adds_the_table_aligned_to_the_last_position():
    layer = PositionalEmbedding(sequence_length=4)
    layer.build((None, 4, 2))
    table = np.arange(8, dtype=np.float32).reshape(4, 2)
    layer.embeddings.assign(table)
    x = np.array([[[10.0, 20.0], [30.0, 40.0], [50.0, 60.0], [70.0, 80.0]]])
    np.testing.assert_allclose(layer(x.astype(np.float32)), x + table)
    # A shorter (left-padded) sequence: its last item keeps the last row.
    short = np.ones((1, 2, 2), np.float32)
    np.testing.assert_allclose(layer(short)[0], 1.0 + table[2:])


def test_seeded_tables_are_reproducible():
    first = PositionalEmbedding(5, seed=3)
    second = PositionalEmbedding(5, seed=3)
    for layer in (first, second):
        layer.build((None, 5, 4))
    np.testing.assert_array_equal(first.embeddings.numpy(), second.embeddings.numpy())


@pytest.mark.parametrize("length", [0, -2, 2.5])
def test_invalid_sequence_length(length):
    with pytest.raises(ValueError, match="sequence_length"):
        PositionalEmbedding(sequence_length=length)


def test_rejects_inputs_longer_than_the_table():
    with pytest.raises(ValueError, match="sequence_length"):
        PositionalEmbedding(sequence_length=3)(np.zeros((1, 4, 2), np.float32))


def test_config_json_round_trip():
    layer = PositionalEmbedding(6, seed=2, name="positions")
    config = json.loads(json.dumps(layer.get_config()))
    clone = PositionalEmbedding.from_config(config)
    assert clone.get_config() == layer.get_config()
    x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(clone(x), layer(x))


def test_one_training_step_moves_the_table():
    inputs = keras.Input((4, 3))
    layer = PositionalEmbedding(4, seed=0)
    model = keras.Model(inputs, keras.ops.sum(layer(inputs), axis=(1, 2)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = layer.embeddings.numpy().copy()
    model.fit(np.zeros((8, 4, 3)), np.full((8,), 5.0), epochs=1, verbose=0)
    # d(loss)/dP is the same for every entry: every entry moves up.
    assert np.all(layer.embeddings.numpy() > before)


def test_width_unknown_when_traced_is_aligned_to_the_last_position():
    import tensorflow as tf

    layer = PositionalEmbedding(sequence_length=5)
    layer.build((None, None, 2))
    table = np.arange(10, dtype=np.float32).reshape(5, 2)
    layer.embeddings.assign(table)
    add = tf.function(
        layer, input_signature=[tf.TensorSpec([None, None, 2], tf.float32)]
    )
    for width in (1, 3, 5):
        np.testing.assert_allclose(
            add(tf.zeros((2, width, 2)))[0], table[5 - width :], atol=0.0
        )


def test_rejects_a_longer_input_after_build_and_when_traced():
    import tensorflow as tf

    layer = PositionalEmbedding(sequence_length=3)
    layer(np.zeros((1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="4 positions but `sequence_length` is 3"):
        layer(np.zeros((1, 4, 2), np.float32))
    add = tf.function(
        layer, input_signature=[tf.TensorSpec([None, None, 2], tf.float32)]
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="sequence_length"):
        add(tf.zeros((1, 4, 2)))

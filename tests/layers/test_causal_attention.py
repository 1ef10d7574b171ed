import json

import keras
import numpy as np
import pytest

from keras_rec.layers.causal_attention import CausalSelfAttentionBlock


def _layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(-1, keepdims=True)
    variance = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def numpy_block(block: CausalSelfAttentionBlock, x: np.ndarray, mask: np.ndarray):
    """The paper's block without dropout, from the layer's weights."""
    attention = block.attention

    def project(dense, h):  # [B, L, d] -> [B, L, heads, key_dim]
        kernel, bias = (w.numpy() for w in dense.weights)
        return np.einsum("bld,dhk->blhk", h, kernel) + bias

    normed = _layer_norm(
        x, *(w.numpy() for w in block.attention_norm.weights), block.layer_norm_epsilon
    )
    query = project(attention._query_dense, normed)
    key = project(attention._key_dense, normed)
    value = project(attention._value_dense, normed)
    logits = np.einsum("bqhk,bshk->bhqs", query, key) / np.sqrt(query.shape[-1])
    length = x.shape[1]
    allowed = (
        np.tril(np.ones((length, length), bool))[None, None] & mask[:, None, None, :]
    )
    logits = np.where(allowed, logits, -1e9)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights = weights / weights.sum(-1, keepdims=True)
    context = np.einsum("bhqs,bshk->bqhk", weights, value)
    kernel, bias = (w.numpy() for w in attention._output_dense.weights)
    hidden = x + np.einsum("bqhk,hkd->bqd", context, kernel) + bias
    normed = _layer_norm(
        hidden,
        *(w.numpy() for w in block.feedforward_norm.weights),
        block.layer_norm_epsilon,
    )
    w1, b1 = (w.numpy() for w in block.intermediate_dense.weights)
    w2, b2 = (w.numpy() for w in block.output_dense.weights)
    outputs = hidden + np.maximum(normed @ w1 + b1, 0.0) @ w2 + b2
    return outputs * mask[..., None], weights * mask[:, None, :, None]


def _randomized_block(hidden_dim=8, num_heads=2, seed=0, **kwargs):
    block = CausalSelfAttentionBlock(hidden_dim, num_heads, seed=seed, **kwargs)
    block.build((None, 5, hidden_dim))
    rng = np.random.default_rng(seed)
    # Non-trivial norms and biases too, so the check covers every weight.
    for weight in block.weights:
        weight.assign(rng.normal(0.0, 0.5, weight.shape).astype(np.float32))
    return block


def _inputs(batch=3, length=5, dim=8, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, length, dim)).astype(np.float32)
    mask = np.ones((batch, length), bool)
    mask[1, :2] = False  # left padding
    mask[2, :4] = False
    return x, mask


def test_output_and_attention_shapes():
    block = CausalSelfAttentionBlock(hidden_dim=8, num_heads=2)
    x, mask = _inputs()
    outputs, scores = block(x, padding_mask=mask, return_attention_scores=True)
    assert outputs.shape == (3, 5, 8)
    assert scores.shape == (3, 2, 5, 5)
    assert block(x).shape == (3, 5, 8)


def test_matches_numpy_with_padding():
    block = _randomized_block(layer_norm_epsilon=1e-3)
    x, mask = _inputs()
    outputs, scores = block(x, padding_mask=mask, return_attention_scores=True)
    expected, expected_scores = numpy_block(block, x, mask)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-5)


def test_attention_is_causal_and_skips_padding():
    block = _randomized_block()
    x, mask = _inputs()
    scores = block(x, padding_mask=mask, return_attention_scores=True)[1].numpy()
    upper = np.triu(np.ones((5, 5), bool), k=1)
    assert np.all(scores[:, :, upper] == 0.0)
    assert np.all(scores[~mask[:, None, None, :].repeat(5, 2).repeat(2, 1)] == 0.0)
    # Rows of real queries sum to one; rows of padded queries are zero.
    np.testing.assert_allclose(
        scores.sum(-1), np.broadcast_to(mask[:, None, :], (3, 2, 5)), atol=1e-6
    )


@pytest.mark.parametrize("position", [1, 2, 4])
def test_changing_position_t_changes_no_earlier_output(position):
    block = _randomized_block()
    x, mask = _inputs()
    mask[:] = True
    changed = x.copy()
    changed[:, position] += 3.0
    before = block(x, padding_mask=mask).numpy()
    after = block(changed, padding_mask=mask).numpy()
    np.testing.assert_array_equal(after[:, :position], before[:, :position])
    assert np.abs(after[:, position:] - before[:, position:]).min(axis=-1).max() > 0


def test_padded_inputs_change_nothing_and_give_zero_outputs():
    block = _randomized_block()
    x, mask = _inputs()
    noisy = x.copy()
    noisy[~mask] = 100.0
    before = block(x, padding_mask=mask).numpy()
    np.testing.assert_allclose(block(noisy, padding_mask=mask), before, atol=1e-5)
    assert np.all(before[~mask] == 0.0)


def test_dropout_only_in_training():
    block = _randomized_block(dropout_rate=0.5)
    x, mask = _inputs()
    inference = block(x, padding_mask=mask, training=False).numpy()
    np.testing.assert_allclose(inference, numpy_block(block, x, mask)[0], atol=1e-4)
    assert not np.allclose(block(x, padding_mask=mask, training=True), inference)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"hidden_dim": 10, "num_heads": 3}, "num_heads"),
        ({"hidden_dim": 8, "num_heads": 0}, "num_heads"),
        ({"hidden_dim": 8, "intermediate_dim": -1}, "intermediate_dim"),
        ({"hidden_dim": 8, "dropout_rate": 1.0}, "dropout_rate"),
        ({"hidden_dim": 8, "attention_dropout_rate": -0.1}, "attention_dropout"),
        ({"hidden_dim": 8, "layer_norm_epsilon": 0.0}, "layer_norm_epsilon"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CausalSelfAttentionBlock(**kwargs)


def test_rejects_inputs_of_another_width():
    with pytest.raises(ValueError, match="hidden_dim"):
        CausalSelfAttentionBlock(hidden_dim=8)(np.zeros((1, 3, 6), np.float32))


def test_config_json_round_trip():
    block = _randomized_block(intermediate_dim=12, dropout_rate=0.2, name="b")
    config = json.loads(json.dumps(block.get_config()))
    clone = CausalSelfAttentionBlock.from_config(config)
    assert clone.get_config() == block.get_config()
    x, mask = _inputs()
    clone.build(x.shape)
    clone.set_weights(block.get_weights())
    np.testing.assert_allclose(
        clone(x, padding_mask=mask), block(x, padding_mask=mask), atol=1e-6
    )


def test_one_training_step_updates_every_weight():
    inputs = keras.Input((5, 8))
    block = CausalSelfAttentionBlock(8, 2, dropout_rate=0.1, seed=0)
    model = keras.Model(inputs, block(inputs))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x, _ = _inputs(batch=8)
    before = [w.numpy().copy() for w in block.trainable_weights]
    model.fit(x, np.zeros_like(x), epochs=1, batch_size=8, verbose=0)
    for old, weight in zip(before, block.trainable_weights, strict=True):
        assert not np.allclose(old, weight.numpy()), weight.path

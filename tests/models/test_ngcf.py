import functools
import json

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from keras_rec.export import testing
from keras_rec.models.bpr_mf import BPRMF
from keras_rec.models.graph_adjacency import normalized_adjacency
from keras_rec.models.ngcf import NGCF


@pytest.fixture(scope="module")
def trained(loo_split, fit_bpr):
    model = NGCF(
        loo_split.num_users,
        loo_split.num_items,
        16,
        [16, 8],
        node_dropout=0.1,
        message_dropout=0.1,
        seed=0,
        interactions=loo_split.train,
    )
    # 12 epochs: with dropout on 300 users NGCF passes popularity's NDCG@20
    # (0.102) only after about 10 (0.100-0.111 over epochs 6-10 with
    # rounding-level changes to the step; 0.120-0.131 at 12).
    return model, fit_bpr(model, loo_split.train, 12)


def numpy_ngcf(model, matrix) -> tuple[np.ndarray, np.ndarray]:
    """Final embeddings from the paper's formula (or, for a model with
    `adjacency="mean_self_loops"`, the reference code's), densely in NumPy."""
    num_users, num_items = matrix.shape
    adjacency = np.zeros((num_users + num_items,) * 2)
    adjacency[:num_users, num_users:] = matrix.toarray() != 0
    adjacency[num_users:, :num_users] = adjacency[:num_users, num_users:].T
    if model.adjacency == "symmetric":
        degree = adjacency.sum(axis=1)
        scale = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1)), 0.0)
        laplacian = scale[:, None] * adjacency * scale[None, :]
        self_weight = 1.0  # (L + I) E W1
    else:  # D~^-1 (A + I): the self-connection is inside the mean
        adjacency += np.eye(len(adjacency))
        laplacian = adjacency / adjacency.sum(axis=1, keepdims=True)
        self_weight = 0.0
    encoder = model.encoder
    layer = np.concatenate(
        [encoder.user_embeddings.numpy(), encoder.item_embeddings.numpy()]
    ).astype(np.float64)
    parts = [layer]
    for propagation in encoder.propagation:
        w1, b1 = propagation.sum_kernel.numpy(), propagation.sum_bias.numpy()
        w2, b2 = propagation.bi_kernel.numpy(), propagation.bi_bias.numpy()
        side = laplacian @ layer
        out = (side + self_weight * layer) @ w1 + b1 + (side * layer) @ w2 + b2
        layer = np.where(out > 0, out, 0.2 * out)
        parts.append(layer / np.linalg.norm(layer, axis=1, keepdims=True))
    final = np.concatenate(parts, axis=1)
    return final[: matrix.shape[0]], final[matrix.shape[0] :]


def test_loss_goes_down_and_beats_popularity(loo_split, trained, beats_popularity):
    model, losses = trained
    assert losses[-1] < 0.8 * losses[0]
    beats_popularity(model, loo_split, "loo_full", "ndcg@20")


def test_score_all_matches_numpy_forward(
    loo_split, trained, check_inner_product_scores
):
    model, _ = trained
    users, items = numpy_ngcf(model, loo_split.train.to_csr())
    assert users.shape[1] == 16 + 16 + 8
    rows, item_ids = np.array([0, 9, 299]), np.array([[1, 2], [3, 4], [5, 149]])
    check_inner_product_scores(model, users, items, rows, item_ids, atol=1e-5)


def test_dropout_only_in_training(trained):
    model, _ = trained
    batch = {"user_id": np.array([0, 1]), "item_ids": np.array([[1, 2], [3, 4]])}
    first = model(batch, training=True).numpy()
    second = model(batch, training=True).numpy()
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(model(batch).numpy(), model(batch).numpy())


def test_batch_rows_and_their_gradients_match_the_whole_graph(trained):
    # `call` combines only the batch's rows of each layer; the result and
    # its gradients must equal gathering from the whole graph's embeddings.
    model, _ = trained
    encoder = model.encoder
    user_id, item_ids = np.array([0, 9, 9]), np.array([[1, 2], [3, 4], [5, 149]])
    weights = tf.constant(np.random.default_rng(0).normal(size=(3, 2)), tf.float32)
    results = []
    for rows_only in (True, False):
        with tf.GradientTape() as tape:
            if rows_only:
                users, items = encoder((user_id, item_ids))
            else:
                all_users, all_items = encoder.propagate()
                users = tf.gather(all_users, user_id)
                items = tf.gather(all_items, item_ids)
            loss = tf.reduce_sum(tf.einsum("bd,bcd->bc", users, items) * weights)
        gradients = tape.gradient(loss, encoder.trainable_weights)
        results.append([loss] + [tf.convert_to_tensor(g) for g in gradients])
    for rows, whole in zip(*results, strict=True):
        np.testing.assert_allclose(rows, whole, rtol=1e-4, atol=1e-6)


def test_training_computes_the_last_layer_at_the_batch_nodes_only(trained, monkeypatch):
    # The earlier layers feed the next layer's product and are computed
    # whole; the last at the batch's distinct nodes (2 users, 6 items).
    model, _ = trained
    encoder = model.encoder
    rows_out = []
    for layer in encoder.propagation:
        call = layer.call

        @functools.wraps(call)
        def spy(*args, call=call, **kwargs):
            output = call(*args, **kwargs)
            rows_out.append(int(output.shape[0]))
            return output

        monkeypatch.setattr(layer, "call", spy)
    batch = {
        "user_id": np.array([0, 9, 9]),
        "item_ids": np.array([[1, 2], [3, 4], [5, 149]]),
    }
    scores = model(batch, training=True)
    assert scores.shape == (3, 2)
    nodes = encoder.num_nodes
    assert rows_out == [nodes] * (len(encoder.propagation) - 1) + [8]


def test_keras_save_load_gives_same_outputs(trained, reload):
    model, _ = trained
    restored = reload(model)
    inputs = {"user_id": np.array([1, 2]), "item_ids": np.array([[3, 4], [5, 6]])}
    np.testing.assert_allclose(model(inputs), restored(inputs), rtol=1e-6)
    restored.cache_embeddings()
    users = {"user_id": np.arange(10)}
    np.testing.assert_allclose(
        model.score_all(users), restored.score_all(users), rtol=1e-5, atol=1e-6
    )


def test_export_parity(loo_split, trained, tmp_path):
    # The serving path is graph_base's, shared with LightGCN, whose test runs
    # the SavedModel through saved_model_cli; here tf.saved_model.load.
    model, _ = trained
    seen = loo_split.train.to_csr()
    testing.check_saved_model(model, tmp_path, seen_items=seen, use_cli=False)
    testing.check_tflite(model, tmp_path, seen_items=seen)


def test_embeddings_initializer_reaches_the_ego_embeddings():
    graph = sp.random(5, 6, density=0.4, format="csr", random_state=0)
    model = NGCF(5, 6, 4, [4], interactions=graph, embeddings_initializer="ones")
    assert np.all(model.encoder.user_embeddings.numpy() == 1.0)
    assert np.all(model.encoder.item_embeddings.numpy() == 1.0)
    assert NGCF.from_config(model.get_config()).embeddings_initializer == "ones"


def test_load_pretrained_starts_from_the_mf_embeddings():
    graph = sp.random(5, 6, density=0.4, format="csr", random_state=0)
    model = NGCF(5, 6, 4, [3], seed=0, interactions=graph)
    before = model.encoder.final_embeddings()[0].numpy().copy()
    mf = BPRMF(5, 6, 4, seed=1)
    assert model.load_pretrained(mf) is model
    users = mf.user_embedding.embeddings.numpy()
    np.testing.assert_array_equal(model.encoder.user_embeddings.numpy(), users)
    np.testing.assert_array_equal(
        model.encoder.item_embeddings.numpy(), mf.item_embedding.embeddings.numpy()
    )
    # The cache is refreshed: e^(0) is the first block of the final rows.
    final_users = model.encoder.final_embeddings()[0].numpy()
    np.testing.assert_allclose(final_users[:, :4], users)
    assert not np.allclose(final_users, before)


def test_load_pretrained_rejects_a_mismatched_or_broken_mf():
    graph = sp.random(5, 6, density=0.4, format="csr", random_state=0)
    model = NGCF(5, 6, 4, [3], seed=0, interactions=graph)
    original = model.encoder.user_embeddings.numpy().copy()
    with pytest.raises(ValueError, match=r"user embeddings have shape \(5, 8\)"):
        model.load_pretrained(BPRMF(5, 6, 8))
    with pytest.raises(ValueError, match=r"item embeddings have shape \(7, 4\)"):
        model.load_pretrained(BPRMF(5, 7, 4))
    broken = BPRMF(5, 6, 4)
    broken.item_embedding.embeddings.assign(np.full((6, 4), np.nan, "float32"))
    with pytest.raises(ValueError, match="item embeddings hold a NaN"):
        model.load_pretrained(broken)
    # Nothing was copied by a refused call.
    np.testing.assert_array_equal(model.encoder.user_embeddings.numpy(), original)


def test_config_json_round_trip():
    graph = sp.random(7, 9, density=0.3, format="csr", random_state=0)
    model = NGCF(7, 9, 3, (4, 2), 0.2, 0.3, l2=0.5, seed=4, interactions=graph)
    config = json.loads(json.dumps(model.get_config()))
    assert config["layer_sizes"] == [4, 2]
    assert NGCF.from_config(config).get_config() == model.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layer_sizes": []}, "layer_sizes"),
        ({"layer_sizes": [4, 0]}, "units"),
        ({"node_dropout": 1.0}, "node_dropout"),
        ({"message_dropout": -0.1}, "message_dropout"),
        ({"l2": -1.0}, "l2"),
        ({"embedding_dim": 0}, "embedding_dim"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NGCF(num_users=3, num_items=3, num_edges=2, **kwargs)


# === The reference code's adjacency, D~^-1 (A + I) ===


def test_mean_self_loops_adjacency_is_the_row_mean_over_node_and_neighbours():
    matrix = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]]))
    mean = normalized_adjacency(matrix, "mean_self_loops").toarray()
    # Nodes: users 0-2, items 3-5. User 0 has items 3 and 4, so its row is
    # the mean over itself and them; user 2 and item 5 have no edge and
    # keep only their self-loop.
    np.testing.assert_allclose(mean[0], [1 / 3, 0, 0, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(mean[4], [1 / 3, 1 / 3, 0, 0, 1 / 3, 0])
    np.testing.assert_allclose(mean[2], [0, 0, 1, 0, 0, 0])
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, rtol=1e-6)
    assert not np.allclose(mean, mean.T)  # rows, not columns, are normalised
    with pytest.raises(ValueError, match="adjacency.*symmetric.*mean_self_loops"):
        normalized_adjacency(matrix, "plain")


@pytest.fixture(scope="module")
def mean_model(loo_split):
    return NGCF(
        loo_split.num_users,
        loo_split.num_items,
        8,
        [8, 4],
        seed=3,
        interactions=loo_split.train,
        adjacency="mean_self_loops",
    )


def test_mean_self_loops_model_matches_numpy_forward(
    loo_split, mean_model, check_inner_product_scores
):
    matrix = loo_split.train.to_csr()
    # One stored nonzero per edge direction and one self-loop per node.
    nodes = loo_split.num_users + loo_split.num_items
    assert mean_model.encoder.adjacency_values.shape[0] == 2 * matrix.nnz + nodes
    users, items = numpy_ngcf(mean_model, matrix)
    rows, item_ids = np.array([0, 9, 299]), np.array([[1, 2], [3, 4], [5, 149]])
    check_inner_product_scores(mean_model, users, items, rows, item_ids, atol=1e-5)


def test_mean_self_loops_gradients_match_a_dense_computation(loo_split, mean_model):
    # The adjacency is not symmetric, so its backward product must use the
    # transpose even without node dropout: checked against TensorFlow's own
    # gradient of the same forward pass on the dense matrix.
    encoder = mean_model.encoder
    dense = tf.constant(
        normalized_adjacency(loo_split.train.to_csr(), "mean_self_loops").toarray()
    )
    user_id, item_ids = np.array([0, 9]), np.array([[1, 2], [3, 149]])
    weights = tf.constant([[1.0, -2.0], [0.5, 3.0]])

    def dense_scores():
        layer = tf.concat([encoder.user_embeddings, encoder.item_embeddings], 0)
        parts = [layer]
        for propagation in encoder.propagation:
            side = tf.matmul(dense, layer)
            out = (
                tf.matmul(side, propagation.sum_kernel)
                + propagation.sum_bias
                + tf.matmul(side * layer, propagation.bi_kernel)
                + propagation.bi_bias
            )
            layer = tf.nn.leaky_relu(out, alpha=0.2)
            parts.append(tf.math.l2_normalize(layer, -1))
        final = tf.concat(parts, -1)
        users = tf.gather(final, user_id)
        items = tf.gather(final, item_ids + loo_split.num_users)
        return tf.einsum("bd,bcd->bc", users, items)

    results = []
    for scores in (
        lambda: mean_model({"user_id": user_id, "item_ids": item_ids}),
        dense_scores,
    ):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(scores() * weights)
        gradients = tape.gradient(loss, encoder.trainable_weights)
        results.append([loss] + [tf.convert_to_tensor(g) for g in gradients])
    for ours, reference in zip(*results, strict=True):
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6)


def test_mean_self_loops_survives_config_and_keras_round_trips(mean_model, reload):
    config = json.loads(json.dumps(mean_model.get_config()))
    assert config["adjacency"] == "mean_self_loops"
    rebuilt = NGCF.from_config(config)
    assert not rebuilt.encoder.propagation[0].self_connection
    restored = reload(mean_model)
    inputs = {"user_id": np.array([1, 2]), "item_ids": np.array([[3, 4], [5, 6]])}
    np.testing.assert_allclose(mean_model(inputs), restored(inputs), rtol=1e-6)


def test_unknown_adjacency_is_refused():
    with pytest.raises(ValueError, match="`adjacency` must be one of"):
        NGCF(num_users=3, num_items=3, num_edges=2, adjacency="norm")

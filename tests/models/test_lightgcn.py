"""LightGCN, and the shared graph parts of `keras_rec.models.graph_base`."""

import json
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from keras_rec.export import testing
from keras_rec.layers.graph_propagation import LightGCNPropagation
from keras_rec.losses.bpr import BPRLoss
from keras_rec.models.graph_adjacency import interaction_matrix
from keras_rec.models.graph_base import GraphEncoder, normalized_adjacency
from keras_rec.models.lightgcn import LightGCN
from keras_rec.models.ngcf import NGCF


@pytest.fixture(scope="module")
def trained(loo_split, fit_bpr):
    model = LightGCN(
        loo_split.num_users,
        loo_split.num_items,
        16,
        2,
        seed=0,
        interactions=loo_split.train,
    )
    return model, fit_bpr(model, loo_split.train, 8)


def numpy_lightgcn(model, matrix) -> tuple[np.ndarray, np.ndarray]:
    """Final embeddings from the paper's formula, densely in NumPy."""
    num_users, num_items = matrix.shape
    adjacency = np.zeros((num_users + num_items,) * 2)
    adjacency[:num_users, num_users:] = matrix.toarray()
    adjacency[num_users:, :num_users] = matrix.toarray().T
    degree = adjacency.sum(1)
    scale = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1)), 0.0)
    laplacian = scale[:, None] * adjacency * scale[None, :]
    layer = np.concatenate(
        [model.encoder.user_embeddings.numpy(), model.encoder.item_embeddings.numpy()]
    )
    total = layer.copy()
    for _ in range(model.num_layers):
        layer = laplacian @ layer
        total += layer
    final = total / (model.num_layers + 1)
    return final[:num_users], final[num_users:]


def test_normalized_adjacency_matches_numpy():
    matrix = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]))
    laplacian = normalized_adjacency(matrix).toarray()
    dense = np.zeros((7, 7))
    dense[:3, 3:], dense[3:, :3] = matrix.toarray(), matrix.toarray().T
    degree = dense.sum(1)
    scale = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1)), 0.0)
    np.testing.assert_allclose(laplacian, scale[:, None] * dense * scale, rtol=1e-6)
    np.testing.assert_allclose(laplacian, laplacian.T)
    assert laplacian[0, 4] == pytest.approx(1 / np.sqrt(2 * 2))  # u0 - i1
    assert not laplacian[2].any() and not laplacian[:, 6].any()  # isolated


def test_loss_goes_down_and_beats_popularity(loo_split, trained, beats_popularity):
    model, losses = trained
    assert losses[-1] < 0.8 * losses[0]
    beats_popularity(model, loo_split, "loo_full", "ndcg@20")


def test_score_all_matches_numpy_propagation(
    loo_split, trained, check_inner_product_scores
):
    model, _ = trained
    users, items = numpy_lightgcn(model, loo_split.train.to_csr())
    rows, item_ids = np.array([0, 7, 299]), np.array([[1, 2], [3, 4], [5, 149]])
    check_inner_product_scores(model, users, items, rows, item_ids, atol=1e-6)


def test_cached_embeddings_follow_any_weight_change(loo_split):
    model = LightGCN(loo_split.num_users, loo_split.num_items, 8, seed=1, num_edges=5)
    with pytest.raises(ValueError, match="num_edges=5"):
        model.set_graph(loo_split.train)
    model = LightGCN(
        loo_split.num_users,
        loo_split.num_items,
        8,
        seed=1,
        interactions=loo_split.train,
    )
    inputs = {"user_id": np.array([3])}
    first = model.score_all(inputs).numpy()
    # Propagation is linear: doubling every ego embedding doubles the final
    # ones, so the scores grow four times.
    model.encoder.user_embeddings.assign(model.encoder.user_embeddings * 2.0)
    model.encoder.item_embeddings.assign(model.encoder.item_embeddings * 2.0)
    np.testing.assert_allclose(model.score_all(inputs), 4.0 * first, rtol=1e-5)
    weights = model.get_weights()
    rng = np.random.default_rng(0)
    for index in (0, 1):  # the user and item ego embeddings
        weights[index] = rng.normal(size=weights[index].shape).astype(np.float32)
    model.set_weights(weights)
    users, items = numpy_lightgcn(model, loo_split.train.to_csr())
    np.testing.assert_allclose(
        model.score_all(inputs), users[[3]] @ items.T, rtol=1e-4, atol=1e-5
    )


def test_keras_save_load_gives_same_outputs(trained, reload):
    model, _ = trained
    restored = reload(model)
    inputs = {"user_id": np.array([1, 2]), "item_ids": np.array([[3, 4], [5, 6]])}
    np.testing.assert_allclose(model(inputs), restored(inputs), rtol=1e-6)
    users = {"user_id": np.arange(10)}
    np.testing.assert_allclose(model.score_all(users), restored.score_all(users))
    # The graph came from the file: re-propagating gives the same scores.
    restored.cache_embeddings()
    np.testing.assert_allclose(
        model.score_all(users), restored.score_all(users), rtol=1e-6
    )


def test_export_parity_without_sparse_ops(loo_split, trained, tmp_path):
    model, _ = trained
    seen = loo_split.train.to_csr()
    path = testing.check_saved_model(model, tmp_path, seen_items=seen, use_cli=True)
    loaded = tf.saved_model.load(path)
    graph = loaded.signatures["serving_default"].graph.as_graph_def()
    ops = {node.op for node in graph.node} | {
        node.op for function in graph.library.function for node in function.node_def
    }
    assert not [op for op in ops if "Sparse" in op], sorted(ops)
    testing.check_tflite(model, tmp_path, seen_items=seen)


def test_config_json_round_trip():
    graph = sp.random(7, 9, density=0.3, format="csr", random_state=0)
    model = LightGCN(7, 9, 3, num_layers=2, l2=0.5, seed=4, interactions=graph)
    config = json.loads(json.dumps(model.get_config()))
    assert config["num_edges"] == graph.nnz
    assert LightGCN.from_config(config).get_config() == model.get_config()


def test_graph_encoder_config_json_round_trip():
    encoder = GraphEncoder(
        3, 4, 5, 8, [LightGCNPropagation(name="p0")], "concat", True, 0.2, seed=1
    )
    config = json.loads(json.dumps(encoder.get_config()))
    clone = GraphEncoder.from_config(config)
    assert clone.get_config() == encoder.get_config()
    assert clone.output_dim == 16
    with pytest.raises(ValueError, match="combination"):
        GraphEncoder(3, 4, 5, 8, [], combination="sum")


def test_embeddings_initializer_is_seeded_and_kept_in_the_config():
    graph = sp.random(300, 400, density=0.05, format="csr", random_state=0)
    normal = {"class_name": "RandomNormal", "config": {"stddev": 0.1}}

    def ego(**kwargs):
        model = LightGCN(300, 400, 64, seed=3, interactions=graph, **kwargs)
        return (
            model.encoder.user_embeddings.numpy(),
            model.encoder.item_embeddings.numpy(),
        )

    users, items = ego(embeddings_initializer=normal)
    assert np.std(users) == pytest.approx(0.1, rel=0.03)
    assert np.std(items) == pytest.approx(0.1, rel=0.03)
    assert not np.allclose(users[:10], items[:10])  # user and item seeds differ
    again, _ = ego(embeddings_initializer=normal)
    np.testing.assert_array_equal(users, again)  # the model's seed decides
    default, _ = ego()  # Glorot uniform: |w| <= sqrt(6 / (300 + 64))
    assert np.abs(default).max() <= np.sqrt(6 / 364) and np.std(default) < 0.08

    model = LightGCN(300, 400, 8, seed=3, interactions=graph)
    assert model.get_config()["embeddings_initializer"] == "glorot_uniform"
    model = LightGCN(
        300, 400, 8, seed=3, interactions=graph, embeddings_initializer=normal
    )
    config = json.loads(json.dumps(model.get_config()))
    assert config["embeddings_initializer"]["config"]["stddev"] == 0.1
    clone = LightGCN.from_config(config)
    clone.set_graph(graph)
    np.testing.assert_array_equal(
        clone.encoder.user_embeddings.numpy(), model.encoder.user_embeddings.numpy()
    )
    with pytest.raises(ValueError, match="initializer"):
        LightGCN(3, 3, 4, num_edges=1, embeddings_initializer="no_such_thing")


def test_l2_penalty_is_on_the_batch_ego_embeddings(trained):
    model, _ = trained
    x = {"user_id": np.array([0, 1]), "item_ids": np.array([[2, 3], [4, 5]])}
    scores = model(x)
    y = np.zeros(2, np.float32)
    margin = scores.numpy()[:, 0] - scores.numpy()[:, 1]
    bpr = np.mean(np.log1p(np.exp(-margin)))
    p = model.encoder.user_embeddings.numpy()[x["user_id"]]
    q = model.encoder.item_embeddings.numpy()[x["item_ids"]]
    penalty = model.l2 * (np.sum(p**2) + np.sum(q**2)) / (2 * 2)
    loss = model.compute_loss(x, y, scores)
    np.testing.assert_allclose(float(loss), bpr + penalty, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_users": 0, "num_items": 3, "num_edges": 1}, "num_users"),
        (
            {"num_users": 3, "num_items": 3, "num_edges": 1, "num_layers": -1},
            "num_layers",
        ),
        ({"num_users": 3, "num_items": 3, "num_edges": 1, "l2": -1.0}, "l2"),
        ({"num_users": 3, "num_items": 3}, "num_edges"),
        (
            {"num_users": 3, "num_items": 3, "interactions": sp.eye(3), "num_edges": 2},
            "num_edges",
        ),
        ({"num_users": 3, "num_items": 4, "interactions": sp.eye(3)}, "shape"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LightGCN(**kwargs)


def test_the_interaction_matrix_leaves_the_callers_matrix_alone():
    # A float32 CSR used to be binarised in place: the caller's ratings
    # became ones.
    ratings = sp.csr_matrix(np.array([[5, 0, 2], [0, 3, 0]], np.float32))
    binary = interaction_matrix(ratings, 2, 3)
    np.testing.assert_array_equal(binary.toarray(), [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(ratings.toarray(), [[5, 0, 2], [0, 3, 0]])


def test_graph_models_are_not_jit_compiled():
    # XLA has no CSR sparse-matrix kernels: Keras' "auto" (XLA on where a GPU
    # is visible) and an explicit jit_compile=True both fall back to graphs.
    graph = sp.random(7, 9, density=0.3, format="csr", random_state=0)
    for model in (
        LightGCN(7, 9, 3, num_layers=2, seed=4, interactions=graph),
        NGCF(7, 9, 3, (4, 2), 0.2, 0.3, seed=4, interactions=graph),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.compile(optimizer="adam", loss=BPRLoss(), jit_compile=True)
        assert model.jit_compile is False

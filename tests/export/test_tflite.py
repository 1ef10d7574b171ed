"""TFLite export: builtin ops only, LiteRT outputs equal TensorFlow's."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import keras_rec  # noqa: F401  (sets the Keras backend)
from keras_rec.data import Interactions, make_synthetic
from keras_rec.export import export_tflite, testing
from keras_rec.models import BPRMF, MultDAE, Popularity, SASRec

NUM_USERS, NUM_ITEMS, K = 50, 40, 5


@pytest.fixture(scope="module")
def train() -> Interactions:
    return make_synthetic(
        num_users=NUM_USERS, num_items=NUM_ITEMS, mean_length=8, min_length=4
    )


@pytest.fixture(scope="module")
def models(train) -> dict:
    return {
        "user_id": BPRMF(NUM_USERS, NUM_ITEMS, embedding_dim=8, seed=0),
        "item_history": Popularity(NUM_ITEMS).fit_closed_form(train),
    }


@pytest.mark.parametrize("kind", ["user_id", "item_history"])
def test_litert_matches_tensorflow(kind, models, train, tmp_path):
    """Both signatures, at batch 1 and resized to batch 4, builtin ops only."""
    seen = train.to_csr() if kind == "user_id" else None
    path = testing.check_tflite(models[kind], tmp_path, seen_items=seen, k=K)
    operators = testing.tflite_operators(path)
    assert "TOPK_V2" in operators and "SCATTER_ND" in operators
    assert not [op for op in operators if op.startswith("CUSTOM")]


def test_litert_matches_hand_computed_answer(tmp_path):
    model = BPRMF(num_users=2, num_items=6, embedding_dim=1)
    model.user_embedding.embeddings.assign(np.ones((2, 1), np.float32))
    model.item_embedding.embeddings.assign(np.arange(6, dtype=np.float32)[:, None])
    seen = Interactions(
        user_ids=[0, 0], item_ids=[5, 3], num_users=2, num_items=6
    ).to_csr()
    path = export_tflite(model, tmp_path / "m.tflite", k=2, seen_items=seen)
    out = testing.run_tflite(path, "serving_default", {"user_id": [0, 1]})
    np.testing.assert_array_equal(out["item_ids"], [[4, 2], [5, 4]])
    np.testing.assert_allclose(out["scores"], [[4, 2], [5, 4]])


def test_fixed_history_length(models, tmp_path):
    model = models["item_history"]
    path = testing.check_tflite(model, tmp_path, k=K, history_length=4)
    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("serving_default")
    spec = runner.get_input_details()["item_history"]
    np.testing.assert_array_equal(spec["shape_signature"], [-1, 4])
    assert spec["dtype"] == np.int64


@pytest.mark.parametrize("history_length", [2, 7])
def test_sasrec_with_a_fixed_history_length_matches_keras(history_length, tmp_path):
    # Shorter and longer than maxlen 4: the padding column the TFLite
    # variant puts first, and SASRec's crop to maxlen, change no answer.
    model = SASRec(NUM_ITEMS, maxlen=4, hidden_dim=8, seed=0)
    testing.check_tflite(model, tmp_path, k=K, history_length=history_length)


def test_resizable_history_length(models, tmp_path):
    model = models["item_history"]
    path = export_tflite(model, tmp_path / "m.tflite", k=K)
    for length in (2, 7):
        inputs = testing.example_inputs(model, history_length=length)
        testing.assert_same_top_k(
            model,
            inputs,
            testing.run_tflite(path, "serving_default", inputs),
            testing.expected_recommendations(model, inputs, K),
            testing.excluded_items(model, inputs),
        )


def test_out_of_range_user_ids_fail(models, train, tmp_path):
    """As documented: TFLite has no asserts; a bad id fails in GATHER. (A
    Keras Embedding reads -1 as the last user: `score_items` answered with
    that user's scores before.)"""
    path = export_tflite(
        models["user_id"], tmp_path / "m.tflite", k=K, seen_items=train.to_csr()
    )
    for signature in ("serving_default", "score_items"):
        extra = {"item_ids": [[1, 2]]} if signature == "score_items" else {}
        for user_id in (NUM_USERS, -1, -NUM_USERS):
            with pytest.raises(RuntimeError, match="out of bounds"):
                testing.run_tflite(path, signature, {"user_id": [user_id], **extra})


@pytest.mark.parametrize("kind", ["user_id", "item_history", "sasrec"])
def test_score_items_batch_sizes_must_match(kind, models, train, tmp_path):
    """One `item_ids` row against several queries fails, as in the
    SavedModel; SASRec's batched matmul would broadcast it otherwise."""
    if kind == "sasrec":
        model = SASRec(NUM_ITEMS, maxlen=4, hidden_dim=8, seed=0)
    else:
        model = models[kind]
    seen = train.to_csr() if kind == "user_id" else None
    path = export_tflite(model, tmp_path / "m.tflite", k=K, seen_items=seen)
    for queries, item_rows in ((3, 1), (1, 3)):
        if kind == "user_id":
            query = {"user_id": list(range(queries))}
        else:
            query = {"item_history": [[1, 2]] * queries}
        valid = testing.run_tflite(
            path, "score_items", {**query, "item_ids": [[3, 4]] * queries}
        )
        assert valid["scores"].shape == (queries, 2)
        with pytest.raises(RuntimeError, match="out of bounds|failed to prepare"):
            testing.run_tflite(
                path, "score_items", {**query, "item_ids": [[3, 4]] * item_rows}
            )


@pytest.mark.parametrize("model_name", ["popularity", "mult_dae"])
@pytest.mark.parametrize(
    "history",
    [
        [[-3, 4]],
        [[NUM_ITEMS, 4]],
        [[-1, -1]],
        [[2, 4], [-1, -1]],
        np.zeros((1, 0), np.int64),
    ],
    ids=[
        "below_pad",
        "at_num_items",
        "only_padding",
        "one_row_only_padding",
        "width_zero",
    ],
)
def test_invalid_history_fails_instead_of_being_read_as_padding(
    model_name, history, models, tmp_path
):
    """Without asserts, a bad history must still not give an answer: an id
    below -1 or at num_items, or a row of padding only, would otherwise be
    read as padding and return recommendations. (Popularity's `score_items`
    does not read the history, so only its `serving_default` can fail.)"""
    model = models["item_history"]
    if model_name == "mult_dae":
        model = MultDAE(NUM_ITEMS, latent_dim=4, seed=0)
    path = export_tflite(model, tmp_path / "m.tflite", k=K)
    valid = testing.run_tflite(path, "serving_default", {"item_history": [[2, -1]]})
    assert valid["item_ids"].shape == (1, K)
    signatures = {"serving_default": {}}
    if model_name != "popularity":
        signatures["score_items"] = {"item_ids": [[1]] * len(history)}
    for signature, extra in signatures.items():
        with pytest.raises(RuntimeError, match="out of bounds"):
            testing.run_tflite(path, signature, {"item_history": history, **extra})


class _DigammaPopularity(Popularity):
    """Popularity through `tf.math.digamma`, which has no TFLite builtin."""

    def score_all(self, inputs):
        return tf.math.digamma(1.0 + super().score_all(inputs))


def test_non_builtin_op_is_refused(tmp_path):
    model = _DigammaPopularity(num_items=NUM_ITEMS, name="digamma_popularity")
    with pytest.raises(ValueError, match="builtin ops only.*Digamma"):
        export_tflite(model, tmp_path / "m.tflite", k=K)
    assert not os.path.exists(tmp_path / "m.tflite")


def test_overwrites_atomically_and_validates_arguments(models, train, tmp_path):
    path = tmp_path / "m.tflite"
    export_tflite(models["item_history"], path, k=K)
    first = path.read_bytes()
    seen = train.to_csr()
    export_tflite(models["user_id"], path, k=K, seen_items=seen)
    assert path.read_bytes() != first
    assert os.listdir(tmp_path) == ["m.tflite"]
    signature = Interpreter(model_path=str(path)).get_signature_list()
    assert signature["serving_default"]["inputs"] == ["user_id"]
    with pytest.raises(ValueError, match="`seen_items` is required"):
        export_tflite(models["user_id"], path, k=K)
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="`history_length` must be a positive"):
            export_tflite(models["item_history"], path, history_length=bad)
    with pytest.raises(ValueError, match="`history_length` applies to item_history"):
        export_tflite(
            models["user_id"], path, seen_items=train.to_csr(), history_length=4
        )
    with pytest.raises(ValueError, match="`k` must lie in"):
        export_tflite(models["item_history"], path, k=NUM_ITEMS + 1)
    assert Interpreter(model_path=str(path)).get_signature_list() == signature

"""SavedModel export: parity with the Keras models, REST bodies, errors, atomicity."""

from __future__ import annotations

import json
import os
import pathlib

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

import keras_rec  # noqa: F401  (sets the Keras backend)
from keras_rec.data import Interactions, make_synthetic
from keras_rec.export import (
    export_saved_model,
    export_tflite,
    load_serving,
    saved_model,
    testing,
)
from keras_rec.models import BPRMF, Popularity
from keras_rec.models.base import unscored_score

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "serving.md"
NUM_USERS, NUM_ITEMS, K = 50, 40, 5
BAD_HISTORY = r"`item_history` must lie in \[0, num_items=40\) or be PAD=-1"
BAD_ITEM_IDS = r"`item_ids` must lie in \[0, num_items=40\)"


@pytest.fixture(scope="module")
def train() -> Interactions:
    return make_synthetic(
        num_users=NUM_USERS, num_items=NUM_ITEMS, mean_length=8, min_length=4
    )


@pytest.fixture(scope="module")
def models(train) -> dict:
    """An untrained BPR-MF (parity needs no training) and a fitted popularity."""
    return {
        "user_id": BPRMF(NUM_USERS, NUM_ITEMS, embedding_dim=8, seed=0),
        "item_history": Popularity(NUM_ITEMS).fit_closed_form(train),
    }


@pytest.fixture(scope="module")
def exports(models, train, tmp_path_factory) -> dict:
    """`{input_kind: (model, seen_items, export path)}`."""
    directory = tmp_path_factory.mktemp("exports")
    result = {}
    for kind, model in models.items():
        seen = train.to_csr() if kind == "user_id" else None
        path = export_saved_model(model, directory / kind / "1", k=K, seen_items=seen)
        result[kind] = (model, seen, path)
    return result


@pytest.mark.parametrize("kind", ["user_id", "item_history"])
def test_saved_model_cli_matches_keras_model(kind, models, train, tmp_path):
    """Both signatures, run by saved_model_cli, equal recommend / score_items."""
    model = models[kind]
    seen = train.to_csr() if kind == "user_id" else None
    path = testing.check_saved_model(model, tmp_path, seen_items=seen, k=K)
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))


def test_hand_computed_recommendations_exclude_seen_items(tmp_path):
    """Scores rise with the item id, so the answer is the top unseen ids."""
    model = BPRMF(num_users=3, num_items=10, embedding_dim=1)
    model.user_embedding.embeddings.assign(np.ones((3, 1), np.float32))
    model.item_embedding.embeddings.assign(np.arange(10, dtype=np.float32)[:, None])
    seen = Interactions(
        user_ids=[0, 0, 0, 2], item_ids=[9, 8, 6, 0], num_users=3, num_items=10
    ).to_csr()
    path = export_saved_model(model, tmp_path / "1", k=3, seen_items=seen)
    out = load_serving(path)(user_id=[0, 1, 2])
    np.testing.assert_array_equal(out["item_ids"], [[7, 5, 4], [9, 8, 7], [9, 8, 7]])
    np.testing.assert_allclose(out["scores"], [[7, 5, 4], [9, 8, 7], [9, 8, 7]])
    scores = load_serving(path, "score_items")(user_id=[1], item_ids=[[2, 9]])
    np.testing.assert_allclose(scores["scores"], [[2.0, 9.0]])


def test_k_past_the_unseen_items_ends_with_the_excluded_at_the_lowest(tmp_path):
    # User 0 has seen 3 of 5 items: with k = 5 its last 3 answers are those,
    # scored float32's lowest finite value (docs/serving.md; -inf would not
    # be a JSON number), in the SavedModel as in `recommend` and TFLite.
    model = BPRMF(num_users=1, num_items=5, embedding_dim=1)
    model.user_embedding.embeddings.assign(np.ones((1, 1), np.float32))
    model.item_embedding.embeddings.assign(np.arange(5, dtype=np.float32)[:, None])
    seen = Interactions(
        user_ids=[0, 0, 0], item_ids=[4, 1, 2], num_users=1, num_items=5
    )
    path = export_saved_model(model, tmp_path / "1", k=5, seen_items=seen.to_csr())
    out = load_serving(path)(user_id=[0])
    np.testing.assert_array_equal(out["item_ids"][0, :2], [3, 0])
    assert sorted(out["item_ids"][0, 2:].tolist()) == [1, 2, 4]
    lowest = np.finfo(np.float32).min
    np.testing.assert_array_equal(out["scores"][0], [3.0, 0.0, *[lowest] * 3])
    ids, scores = model.recommend(
        {"user_id": np.array([0])}, k=5, exclude=np.array([[4, 1, 2]])
    )
    np.testing.assert_array_equal(scores.numpy()[0], out["scores"][0])
    tflite = export_tflite(model, tmp_path / "m.tflite", k=5, seen_items=seen.to_csr())
    lite = testing.run_tflite(tflite, "serving_default", {"user_id": np.array([0])})
    np.testing.assert_array_equal(lite["item_ids"][0, :2], [3, 0])
    assert sorted(lite["item_ids"][0, 2:].tolist()) == [1, 2, 4]
    np.testing.assert_array_equal(lite["scores"][0], [3.0, 0.0, *[lowest] * 3])


@pytest.mark.parametrize("bad", [-np.inf, np.nan], ids=["minus_inf", "nan"])
def test_a_non_finite_low_score_still_ranks_before_the_excluded(bad, tmp_path):
    # Item 0 scores -inf or NaN: it is set to the unscored score, just above
    # the excluded items' lowest finite one, wherever the model is served
    # (TOPK_V2 would order a NaN arbitrarily: before, it came first in Keras
    # and pushed an unseen item out of the top-k).
    model = BPRMF(num_users=1, num_items=4, embedding_dim=1)
    model.user_embedding.embeddings.assign(np.ones((1, 1), np.float32))
    items = np.array([[bad], [1.0], [2.0], [3.0]], np.float32)
    model.item_embedding.embeddings.assign(items)
    seen = Interactions(user_ids=[0, 0], item_ids=[3, 1], num_users=1, num_items=4)
    expected_ids = [2, 0]
    expected = [2.0, unscored_score(np.float32), *[np.finfo(np.float32).min] * 2]
    ids, scores = model.recommend(
        {"user_id": np.array([0])}, k=4, exclude=np.array([[3, 1]])
    )
    path = export_saved_model(model, tmp_path / "1", k=4, seen_items=seen.to_csr())
    out = load_serving(path)(user_id=[0])
    tflite = export_tflite(model, tmp_path / "m.tflite", k=4, seen_items=seen.to_csr())
    lite = testing.run_tflite(tflite, "serving_default", {"user_id": np.array([0])})
    for got_ids, got_scores in (
        (ids.numpy(), scores.numpy()),
        (out["item_ids"], out["scores"]),
        (lite["item_ids"], lite["scores"]),
    ):
        np.testing.assert_array_equal(got_ids[0, :2], expected_ids)
        assert sorted(got_ids[0, 2:].tolist()) == [1, 3]
        np.testing.assert_array_equal(got_scores[0], expected)


def test_hand_computed_popularity_excludes_history(tmp_path):
    counts = {3: 4, 1: 3, 0: 2, 2: 1}
    items = [item for item, count in counts.items() for _ in range(count)]
    train = Interactions(
        user_ids=np.arange(len(items)) % 2, item_ids=items, num_users=2, num_items=5
    )
    model = Popularity(num_items=5).fit_closed_form(train)
    path = export_saved_model(model, tmp_path / "1", k=2)
    out = load_serving(path)(item_history=[[-1, 3], [1, 3]])
    np.testing.assert_array_equal(out["item_ids"], [[1, 0], [0, 2]])
    np.testing.assert_allclose(out["scores"], np.log1p([[3, 2], [2, 1]]), rtol=1e-6)


def _run_request(path: str, body: dict) -> dict[str, np.ndarray]:
    """Runs a TF Serving REST body (row or columnar format) on the SavedModel."""
    if "instances" in body:
        inputs = testing.instances_to_inputs(body["instances"])
    else:
        inputs = {name: np.asarray(v, np.int64) for name, v in body["inputs"].items()}
    signature = body.get("signature_name", "serving_default")
    return inputs, load_serving(path, signature)(**inputs)


def _check_request(exports: dict, body: dict) -> None:
    names = set(body.get("inputs") or body["instances"][0])
    kind = "user_id" if "user_id" in names else "item_history"
    model, seen, path = exports[kind]
    inputs, out = _run_request(path, body)
    if body.get("signature_name", "serving_default") == "serving_default":
        testing.assert_same_top_k(
            model,
            inputs,
            out,
            testing.expected_recommendations(model, inputs, K, seen),
            testing.excluded_items(model, inputs, seen),
        )
    else:
        candidates = inputs.pop("item_ids")
        np.testing.assert_allclose(
            out["scores"],
            testing.expected_scores(model, inputs, candidates),
            atol=testing.ATOL,
        )


@pytest.mark.parametrize("kind", ["user_id", "item_history"])
def test_export_info_describes_signatures_and_requests(kind, exports):
    model, _, path = exports[kind]
    with open(os.path.join(path, saved_model.INFO_FILE)) as file:
        info = json.load(file)
    assert info["model_class"] == type(model).__name__
    assert (info["k"], info["num_items"], info["input_kind"]) == (K, NUM_ITEMS, kind)
    assert set(info["signatures"]) == {"serving_default", "score_items"}
    assert set(info["signatures"]["score_items"]["inputs"]) == {kind, "item_ids"}
    assert info["signatures"]["serving_default"]["outputs"]["item_ids"] == {
        "dtype": "int64",
        "shape": [None, K],
    }
    loaded = tf.saved_model.load(path)
    for name, signature in info["signatures"].items():
        inputs = loaded.signatures[name].structured_input_signature[1]
        assert set(inputs) == set(signature["inputs"])
    requests = info["rest_requests"]
    assert set(requests) == {"serving_default", "score_items"}
    for name, body in requests.items():
        assert body["signature_name"] == name
        _check_request(exports, body)


def test_documented_request_bodies_run_on_the_exports(exports):
    bodies = [b for b in testing.json_blocks(DOCS.read_text()) if "signature_name" in b]
    covered = {
        (
            "user_id" if "user_id" in (b.get("inputs") or b["instances"][0]) else "h",
            b["signature_name"],
        )
        for b in bodies
    }
    assert covered == {
        ("user_id", "serving_default"),
        ("user_id", "score_items"),
        ("h", "serving_default"),
        ("h", "score_items"),
    }
    for body in bodies:
        _check_request(exports, body)


def test_saved_model_cli_takes_a_history_longer_than_an_argument_may_be(exports):
    # 60,000 slots written as a literal are about 240 KB, past Linux's
    # 128 KiB limit on one command-line argument: the inputs go as files.
    model, _, path = exports["item_history"]
    history = np.full((1, 60_000), -1, np.int64)
    history[0, -3:] = [4, 0, 7]
    out = testing.run_saved_model_cli(
        path, "serving_default", {"item_history": history}
    )
    expected = load_serving(path)(item_history=history)
    np.testing.assert_array_equal(out["item_ids"], expected["item_ids"])
    assert not {4, 0, 7} & set(out["item_ids"][0].tolist())


def test_out_of_range_user_id_is_named_by_the_serving_loader(exports):
    _, _, path = exports["user_id"]
    with pytest.raises(testing.SavedModelCliError) as error:
        testing.run_saved_model_cli(path, "serving_default", {"user_id": [1, 50]})
    message = str(error.value)
    assert "InvalidArgumentError" in message
    assert f"`user_id` must lie in [0, num_users={NUM_USERS})" in message


@pytest.mark.parametrize("signature", ["serving_default", "score_items"])
@pytest.mark.parametrize("user_id", [-1, NUM_USERS, 10**9])
def test_out_of_range_user_id_raises(exports, signature, user_id):
    _, _, path = exports["user_id"]
    extra = {"item_ids": [[1], [1]]} if signature == "score_items" else {}
    with pytest.raises(tf.errors.InvalidArgumentError, match="`user_id` must lie"):
        load_serving(path, signature)(user_id=[0, user_id], **extra)


@pytest.mark.parametrize("signature", ["serving_default", "score_items"])
def test_empty_history_raises(exports, signature):
    _, _, path = exports["item_history"]
    extra = {"item_ids": [[1], [2]]} if signature == "score_items" else {}
    serve = load_serving(path, signature)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="`item_history` has a row"
    ):
        serve(item_history=[[-1, 3], [-1, -1]], **extra)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`item_history`"):
        serve(item_history=np.zeros((2, 0), np.int64), **extra)


@pytest.mark.parametrize("bad", [NUM_ITEMS, -2])
def test_out_of_range_history_item_raises(exports, bad):
    _, _, path = exports["item_history"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=BAD_HISTORY):
        load_serving(path)(item_history=[[-1, 1, bad]])


@pytest.mark.parametrize("kind", ["user_id", "item_history"])
@pytest.mark.parametrize("bad", [NUM_ITEMS, -1])
def test_out_of_range_candidate_raises(exports, kind, bad):
    _, _, path = exports[kind]
    first = {"user_id": [0]} if kind == "user_id" else {"item_history": [[-1, 2]]}
    with pytest.raises(tf.errors.InvalidArgumentError, match=BAD_ITEM_IDS):
        load_serving(path, "score_items")(**first, item_ids=[[0, bad]])


@pytest.mark.parametrize("kind", ["user_id", "item_history"])
def test_mismatched_batch_sizes_are_named(exports, kind):
    _, _, path = exports[kind]
    first = {"user_id": [0, 1]} if kind == "user_id" else {"item_history": [[1], [2]]}
    with pytest.raises(tf.errors.InvalidArgumentError, match="one row per"):
        load_serving(path, "score_items")(**first, item_ids=[[0, 1]])


def test_the_serving_loader_refuses_float_ids_and_wrong_shapes(exports):
    _, _, path = exports["user_id"]
    serve = load_serving(path)
    with pytest.raises(ValueError, match="`user_id` must hold integer ids"):
        serve(user_id=[0.7, 1.9])  # was truncated to [0, 1]
    with pytest.raises(ValueError, match=r"`user_id` must have shape \[None\]"):
        serve(user_id=3)
    score = load_serving(path, "score_items")
    with pytest.raises(ValueError, match=r"`item_ids` must have shape \[None, None\]"):
        score(user_id=[0], item_ids=[1, 2])
    with pytest.raises(ValueError, match="`user_id` holds 18446744073709551615"):
        serve(user_id=np.array([2**64 - 1], np.uint64))  # was read as -1


def test_the_test_helpers_refuse_float_and_wrapping_ids(exports):
    _, _, path = exports["user_id"]
    for ids in ([0.7, 1.9], np.array([2**64 - 1], np.uint64)):
        with pytest.raises(ValueError, match="`user_id`"):
            testing.run_saved_model_cli(path, "serving_default", {"user_id": ids})
    with pytest.raises(ValueError, match="`user_id` must hold integer ids"):
        testing.instances_to_inputs([{"user_id": 0.7}])


def test_the_example_request_of_a_one_user_model_is_valid(tmp_path):
    model = BPRMF(num_users=1, num_items=NUM_ITEMS, embedding_dim=4, seed=0)
    seen = Interactions(user_ids=[0], item_ids=[1], num_users=1, num_items=NUM_ITEMS)
    path = export_saved_model(model, tmp_path / "1", k=K, seen_items=seen.to_csr())
    with open(os.path.join(path, saved_model.INFO_FILE)) as file:
        body = json.load(file)["rest_requests"]["serving_default"]
    inputs = testing.instances_to_inputs(body["instances"])
    assert load_serving(path)(**inputs)["item_ids"].shape == (2, K)


def test_stored_zeros_in_seen_items_are_not_excluded(models, tmp_path):
    model = models["user_id"]
    seen = np.zeros((NUM_USERS, NUM_ITEMS), np.float32)
    seen[0, 3] = 1.0
    seen = sp.csr_matrix(seen)
    seen.data[0] = 0.0  # a stored zero: not a seen item
    path = export_saved_model(model, tmp_path / "m" / "1", k=NUM_ITEMS, seen_items=seen)
    ids = load_serving(path)(user_id=[0])["item_ids"]
    assert 3 in ids[0]
    assert seen.nnz == 1  # the caller's matrix is left as it was


def test_invalid_arguments(models, train, tmp_path):
    bpr = models["user_id"]
    with pytest.raises(ValueError, match="`seen_items` is required"):
        export_saved_model(bpr, tmp_path / "a")
    with pytest.raises(ValueError, match="`seen_items` must have shape"):
        export_saved_model(bpr, tmp_path / "a", seen_items=train.to_csr()[:10])
    with pytest.raises(ValueError, match="`k` must lie in"):
        export_saved_model(bpr, tmp_path / "a", k=0, seen_items=train.to_csr())
    with pytest.raises(ValueError, match="input_kind"):
        export_saved_model(keras.Sequential(), tmp_path / "a")
    with pytest.raises(ValueError, match="Unknown signature"):
        load_serving(export_saved_model(models["item_history"], tmp_path / "b"), "x")
    assert not os.path.exists(tmp_path / "a")


def _item_ids(path: str) -> np.ndarray:
    return load_serving(path)(user_id=np.arange(NUM_USERS))["item_ids"]


@pytest.fixture
def previous(train, tmp_path) -> tuple[str, np.ndarray, BPRMF]:
    """A complete export at `tmp_path/bpr/1`, its answers and a different model."""
    path = export_saved_model(
        BPRMF(NUM_USERS, NUM_ITEMS, 8, seed=1),
        tmp_path / "bpr" / "1",
        k=K,
        seen_items=train.to_csr(),
    )
    other = BPRMF(NUM_USERS, NUM_ITEMS, 8, seed=2)
    return path, _item_ids(path), other


def test_failed_export_keeps_the_previous_one(previous, train, monkeypatch):
    path, answers, other = previous

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    # The SavedModel is complete in the staging folder when this raises.
    monkeypatch.setattr(saved_model, "export_info", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_saved_model(other, path, k=K, seen_items=train.to_csr())
    np.testing.assert_array_equal(_item_ids(path), answers)
    assert os.listdir(os.path.dirname(path)) == ["1"]


def test_failed_rename_restores_the_previous_one(previous, train, monkeypatch):
    path, answers, other = previous
    rename = os.rename

    def rename_except_new_version(source, target):
        if target == path and ".tmp-" in source and not source.endswith(".old"):
            raise OSError("rename failed")
        rename(source, target)

    monkeypatch.setattr(saved_model.os, "rename", rename_except_new_version)
    with pytest.raises(OSError, match="rename failed"):
        export_saved_model(other, path, k=K, seen_items=train.to_csr())
    monkeypatch.undo()
    np.testing.assert_array_equal(_item_ids(path), answers)
    assert os.listdir(os.path.dirname(path)) == ["1"]


def test_failed_restore_never_deletes_the_previous_one(previous, train, monkeypatch):
    path, answers, other = previous
    rename = os.rename

    def rename_except_into_place(source, target):
        if target == path:
            raise OSError("rename failed")
        rename(source, target)

    monkeypatch.setattr(saved_model.os, "rename", rename_except_into_place)
    with pytest.raises(OSError, match="rename failed"):
        export_saved_model(other, path, k=K, seen_items=train.to_csr())
    monkeypatch.undo()
    (staging,) = os.listdir(os.path.dirname(path))
    kept = os.path.join(os.path.dirname(path), staging, "1.old")
    np.testing.assert_array_equal(_item_ids(kept), answers)


def test_next_export_restores_one_interrupted_between_renames(
    previous, train, monkeypatch
):
    # A process killed after moving the old version aside, before moving the
    # new one in, leaves no `1`: the next export (here one that fails) puts
    # the old version back first.
    path, answers, other = previous
    staging = os.path.join(os.path.dirname(path), ".1.tmp-killed")
    os.makedirs(staging)
    os.rename(path, os.path.join(staging, "1.old"))

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(saved_model, "export_info", fail)
    with (
        pytest.warns(UserWarning, match="interrupted"),
        pytest.raises(RuntimeError, match="disk full"),
    ):
        export_saved_model(other, path, k=K, seen_items=train.to_csr())
    np.testing.assert_array_equal(_item_ids(path), answers)
    assert os.listdir(os.path.dirname(path)) == ["1"]


def test_export_replaces_the_previous_one(previous, train):
    path, answers, other = previous
    export_saved_model(other, path, k=K, seen_items=train.to_csr())
    expected, _ = testing.expected_recommendations(
        other, {"user_id": np.arange(NUM_USERS)}, K, train.to_csr()
    )
    new = _item_ids(path)
    assert not np.array_equal(new, answers)
    np.testing.assert_array_equal(new, expected)
    assert os.listdir(os.path.dirname(path)) == ["1"]


def test_export_refuses_to_replace_a_file(models, tmp_path):
    target = tmp_path / "model"
    target.write_text("not a SavedModel")
    with pytest.raises(ValueError, match="is not a folder"):
        export_saved_model(models["item_history"], target)
    assert target.read_text() == "not a SavedModel"


def test_assert_same_top_k_accepts_ties_and_rejects_wrong_answers():
    model = BPRMF(num_users=1, num_items=6, embedding_dim=1)
    model.user_embedding.embeddings.assign(np.ones((1, 1), np.float32))
    scores = np.array([0, 3, 3, 1, 2, 2], np.float32)  # ties: {1, 2} and {4, 5}
    model.item_embedding.embeddings.assign(scores[:, None])
    inputs = {"user_id": np.array([0])}
    expected = testing.expected_recommendations(model, inputs, k=3)

    def check(ids, excluded=None):
        out = {"item_ids": np.array([ids]), "scores": scores[np.array([ids])]}
        testing.assert_same_top_k(model, inputs, out, expected, excluded)

    check([1, 2, 4])
    check([2, 1, 5])  # tie order, and the last item tied with the one left out
    for wrong in ([1, 2, 3], [1, 4, 2], [1, 1, 4]):
        with pytest.raises(AssertionError):
            check(wrong)
    with pytest.raises(AssertionError, match="excluded"):
        check([1, 2, 4], excluded=[{4}])
    # An answer that equals a wrong `expected` (the same top-k code could
    # produce both) is still refused when the model scores a left-out item
    # higher; and a NaN score is never an answer.
    wrong = (np.array([[1, 2, 3]]), scores[np.array([[1, 2, 3]])])
    out = {"item_ids": wrong[0], "scores": wrong[1]}
    with pytest.raises(AssertionError, match="an item left out scores 2.0"):
        testing.assert_same_top_k(model, inputs, out, wrong)
    nan = {
        "item_ids": np.array([[1, 2, 4]]),
        "scores": np.full((1, 3), np.nan, np.float32),
    }
    with pytest.raises(AssertionError, match="NaN scores"):
        testing.assert_same_top_k(model, inputs, nan, (nan["item_ids"], nan["scores"]))

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rec.data import make_split, make_synthetic
from keras_rec.data.datasets import Dataset
from keras_rec.data.pipelines import (
    expected_valid_positions,
    pad_histories,
    sequence_dataset,
)
from keras_rec.evaluation import evaluate
from keras_rec.export import load_serving, testing
from keras_rec.losses.sampled_bce import SampledBinaryCrossentropy
from keras_rec.models import Popularity
from keras_rec.models.sasrec import SASRec

HISTORIES = np.array(
    [[-1, -1, -1, 3, 4, 9], [1, 2, 5, 7, 0, 11], [-1, -1, -1, -1, -1, 8]]
)


def _model(**kwargs):
    arguments = dict(num_items=12, maxlen=6, hidden_dim=8, num_heads=2, seed=0)
    return SASRec(**{**arguments, **kwargs})


def _sequence(model, histories):
    return model({"item_history": histories}, training=False).numpy()


def test_shapes_and_padding_outputs():
    model = _model()
    sequence = _sequence(model, HISTORIES)
    assert sequence.shape == (3, 6, 8)
    assert np.all(sequence[HISTORIES < 0] == 0.0)
    assert model.history_length == 6 and model.input_kind == "item_history"
    assert model.score_all({"item_history": HISTORIES}).shape == (3, 12)


def test_scores_are_the_last_state_times_the_shared_item_embedding():
    model = _model()
    last = _sequence(model, HISTORIES)[:, -1]
    table = model.item_embedding.embeddings.numpy()
    expected = last @ table[1:].T  # row 0 is padding: ids are shifted by one
    np.testing.assert_allclose(
        model.score_all({"item_history": HISTORIES}), expected, rtol=1e-5, atol=1e-6
    )
    candidates = np.array([[0, 11, 4], [3, 3, 7], [10, 2, 1]])
    np.testing.assert_allclose(
        model.score_items({"item_history": HISTORIES}, candidates),
        np.take_along_axis(expected, candidates, axis=1),
        rtol=1e-5,
        atol=1e-6,
    )


def test_embeddings_are_scaled_and_positions_added():
    model = _model(num_blocks=1)
    history = HISTORIES[:1]
    table = model.item_embedding.embeddings.numpy()
    positions = model.position_embedding.embeddings.numpy()
    real = history[0] >= 0
    expected = np.where(
        real[:, None], table[history[0] + 1] * np.sqrt(8) + positions, 0.0
    )
    block = model.blocks[0]
    np.testing.assert_allclose(
        _sequence(model, history)[0],
        model.final_norm(block(expected[None], padding_mask=real[None]))[0]
        * real[:, None],
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("position", [3, 4, 5])
def test_changing_item_t_changes_no_earlier_state(position):
    model = _model()
    before = _sequence(model, HISTORIES[:1])
    changed = HISTORIES[:1].copy()
    changed[0, position] = 10
    after = _sequence(model, changed)
    np.testing.assert_array_equal(after[0, :position], before[0, :position])
    assert np.abs(after[0, position] - before[0, position]).max() > 1e-4


def test_history_length_is_cropped_and_padded():
    model = _model()
    long = np.array([[5, 6, 7, 1, 2, 3, 4, 9, 10]])
    np.testing.assert_allclose(
        model.score_all({"item_history": long}),
        model.score_all({"item_history": long[:, -6:]}),
    )
    short = np.array([[3, 4, 9]])
    np.testing.assert_allclose(
        model.score_all({"item_history": short}),
        model.score_all({"item_history": pad_histories([short[0]], 6)}),
        atol=1e-6,
    )


def test_pair_logits_and_loss_match_numpy():
    model = _model()
    positives = np.array([[-1, -1, 3, 4, 9, 2], [2, 5, 7, 0, 11, 6], [-1] * 5 + [1]])
    negatives = np.where(positives >= 0, (positives + 5) % 12, -1)
    sequence = _sequence(model, HISTORIES)
    table = model.item_embedding.embeddings.numpy()
    logits = model.pair_logits(sequence, positives, negatives).numpy()
    np.testing.assert_allclose(
        logits[..., 0], (sequence * table[positives + 1]).sum(-1), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        logits[..., 1], (sequence * table[negatives + 1]).sum(-1), rtol=1e-5, atol=1e-5
    )
    model.compile()
    loss = model.compute_loss(
        y={"positives": positives, "negatives": negatives}, y_pred=sequence
    )
    real = positives >= 0
    terms = np.log1p(np.exp(-logits[..., 0])) + np.log1p(np.exp(logits[..., 1]))
    np.testing.assert_allclose(float(loss), terms[real].mean(), rtol=1e-5)


def test_width_cropped_batches_give_the_same_outputs_at_the_items():
    # The longest history has 3 items: the batch cropped to width 3 (or 4)
    # is the padded batch without columns of padding only.
    model = _model(dropout_rate=0.3)
    histories = np.array(
        [[-1, -1, -1, 3, 4, 9], [-1, -1, -1, -1, 2, 5], [-1, -1, -1, -1, -1, 8]]
    )
    positives = np.array(
        [[-1, -1, -1, 4, 9, 1], [-1, -1, -1, -1, 5, 0], [-1, -1, -1, -1, -1, 7]]
    )
    negatives = np.where(positives >= 0, (positives + 5) % 12, -1)
    real = histories >= 0
    full = _sequence(model, histories)
    model.compile()
    full_loss = model.compute_loss(
        y={"positives": positives, "negatives": negatives}, y_pred=full
    )
    full_logits = model.pair_logits(full, positives, negatives).numpy()
    for width in (3, 4):
        cropped = _sequence(model, histories[:, -width:])
        assert cropped.shape == (3, width, 8)
        np.testing.assert_allclose(
            cropped[real[:, -width:]], full[real], rtol=1e-5, atol=1e-5
        )
        assert np.all(cropped[~real[:, -width:]] == 0.0)
        logits = model.pair_logits(
            cropped, positives[:, -width:], negatives[:, -width:]
        ).numpy()
        np.testing.assert_allclose(
            logits[real[:, -width:]], full_logits[real], rtol=1e-5, atol=1e-5
        )
        loss = model.compute_loss(
            y={
                "positives": positives[:, -width:],
                "negatives": negatives[:, -width:],
            },
            y_pred=cropped,
        )
        np.testing.assert_allclose(float(loss), float(full_loss), rtol=1e-5)
    # Traced with an unknown width, as `fit` on bucketed batches traces it.
    encode = tf.function(
        lambda history: model({"item_history": history}, training=False),
        input_signature=[tf.TensorSpec([None, None], tf.int64)],
    )
    np.testing.assert_allclose(
        encode(histories[:, -3:])[real[:, -3:]], full[real], rtol=1e-5, atol=1e-5
    )


def test_a_width_above_maxlen_is_an_error():
    model = _model()
    wide = np.full((2, 7), 3)
    with pytest.raises(ValueError, match="7 positions but `sequence_length` is 6"):
        model({"item_history": wide})
    encode = tf.function(
        lambda history: model({"item_history": history}, training=True),
        input_signature=[tf.TensorSpec([None, None], tf.int64)],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="sequence_length` is 6"):
        encode(wide)
    # Scoring crops longer histories to the latest `maxlen` items instead.
    assert model.score_all({"item_history": wide}).shape == (2, 12)


def test_fit_on_bucketed_batches_traces_the_train_step_once_per_fit_mode():
    data = make_synthetic(num_users=300, num_items=60, mean_length=8, seed=4)
    traces = {}
    for bucket in (False, True):
        model = _model(num_items=60, maxlen=12, num_blocks=1)  # fewer ops to trace
        model.compile(
            loss=SampledBinaryCrossentropy(
                normalizer=expected_valid_positions(data, 12, 32) if bucket else None
            )
        )
        train_step = model.train_step
        traces[bucket] = []

        def counted(batch, bucket=bucket, train_step=train_step):
            traces[bucket].append(batch[0]["item_history"].shape.as_list())
            return train_step(batch)

        model.train_step = counted  # Python runs only while tracing
        widths = set()
        for epoch in range(2):
            dataset = sequence_dataset(
                data, 12, 32, epoch=epoch, bucket_by_length=bucket
            )
            widths |= {int(x["item_history"].shape[1]) for x, _ in dataset}
            loss = model.fit(dataset, verbose=0).history["loss"][0]
            assert np.isfinite(loss)
        if bucket:
            assert len(widths) >= 3, widths
    # As many traces as with the fixed width, none per width.
    assert len(traces[True]) == len(traces[False]), traces
    assert all(shape == [None, None] for shape in traces[True]), traces


def test_configs_bucket_the_amazon_entries_and_keep_the_padded_path(tmp_path):
    from keras_rec.configs import sasrec as configs

    entries = {e.dataset: e for e in configs.EXPERIMENTS}
    for name in ("games", "beauty"):
        assert entries[name].hyperparameters["bucket_by_length"] is True
        assert entries[name].hyperparameters["maxlen"] == 50
    for name in ("synthetic", "ml-1m", "ml-100k"):
        assert entries[name].hyperparameters["bucket_by_length"] is False
    data = make_synthetic(num_users=120, num_items=40, mean_length=8, seed=1)
    split = make_split(Dataset("synthetic", data), "loo_sampled", num_negatives=20)
    for bucket, width in ((True, None), (False, 50)):
        model = configs.sasrec(50, 8, 1, 1, 0.2, 1e-3, 32, bucket)(split, 0)
        dataset = configs.sequences(50, 32, bucket)(split, 0, 0)
        spec = dataset.element_spec[0]["item_history"]
        assert spec.shape.as_list() == [None, width]
        expected = expected_valid_positions(split.train, 50, 32) if bucket else None
        assert model.loss.normalizer == expected
    # A resumed run (the trainer reloads `model.keras`) keeps the normalizer.
    path = str(tmp_path / "bucketed.keras")
    model = configs.sasrec(50, 8, 1, 1, 0.2, 1e-3, 32, True)(split, 0)
    model.optimizer.build(model.trainable_variables)
    model.save(path)
    assert keras.saving.load_model(path).loss.normalizer == model.loss.normalizer


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_items": 0}, "num_items"),
        ({"maxlen": 0}, "maxlen"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"hidden_dim": 9, "num_heads": 2}, "num_heads"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _model(**kwargs)


def test_config_json_round_trip():
    model = _model(dropout_rate=0.3, num_blocks=1, name="seq")
    clone = SASRec.from_config(json.loads(json.dumps(model.get_config())))
    assert clone.get_config() == model.get_config()


@pytest.fixture(scope="module")
def trained():
    # Strong sequential dynamics: what a sequence model can use and
    # popularity cannot.
    data = make_synthetic(
        num_users=200, num_items=100, mean_length=15, sequential_probability=0.7, seed=2
    )
    split = make_split(Dataset("synthetic", data), "loo_sampled", num_negatives=50)
    model = SASRec(split.num_items, maxlen=20, hidden_dim=16, dropout_rate=0.2, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(5e-3, beta_2=0.98))
    losses = [
        model.fit(
            sequence_dataset(split.train, 20, 64, seed=0, epoch=epoch), verbose=0
        ).history["loss"][0]
        for epoch in range(10)
    ]
    return model, split, losses


def test_smoke_fit_loss_goes_down_and_beats_popularity(trained):
    model, split, losses = trained
    assert isinstance(model.loss, SampledBinaryCrossentropy)
    assert losses[-1] < losses[0], losses
    popularity = Popularity(split.num_items).fit_closed_form(split.train)
    ours = evaluate(model, split.test, "loo_sampled")
    theirs = evaluate(popularity, split.test, "loo_sampled")
    assert ours["ndcg@10"] > theirs["ndcg@10"], (ours, theirs)


def test_keras_save_load_gives_same_outputs_and_optimizer(trained, tmp_path):
    model, split, _ = trained
    path = str(tmp_path / "sasrec.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    inputs = {"item_history": pad_histories(split.test.histories[:8], 20)}
    np.testing.assert_allclose(loaded.score_all(inputs), model.score_all(inputs))
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations)
    assert isinstance(loaded.loss, SampledBinaryCrossentropy)


def test_saved_model_and_tflite_match_the_model(trained, tmp_path):
    # `tf.saved_model.load` here (saved_model_cli takes ~15 s a call on this
    # machine); train_all's export check runs saved_model_cli on every export.
    model, _, _ = trained
    saved = testing.check_saved_model(model, tmp_path, k=5, use_cli=False)
    lite = testing.check_tflite(model, tmp_path, k=5)
    # A history ending in padding is refused (SASRec reads the last slot;
    # it gave all-zero scores), and so is a negative candidate (it was read
    # as the padding row): named by the SavedModel, out of bounds in TFLite.
    right_padded = np.full((1, 20), -1, np.int64)
    right_padded[0, :2] = [3, 5]
    left_padded = right_padded[:, ::-1].copy()
    with pytest.raises(tf.errors.InvalidArgumentError, match="Pad on the left"):
        load_serving(saved)(item_history=right_padded)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`item_ids` must lie"):
        load_serving(saved, "score_items")(item_history=left_padded, item_ids=[[-1]])
    for signature, extra in (
        ("serving_default", {}),
        ("score_items", {"item_ids": [[1, 2]]}),
    ):
        with pytest.raises(RuntimeError, match="out of bounds"):
            testing.run_tflite(lite, signature, {"item_history": right_padded, **extra})
    for bad in (-1, -7, model.num_items):
        with pytest.raises(RuntimeError, match="out of bounds"):
            testing.run_tflite(
                lite, "score_items", {"item_history": left_padded, "item_ids": [[bad]]}
            )


def test_serving_excludes_a_history_longer_than_maxlen(trained, tmp_path):
    # SASRec reads its last `maxlen` (20) items; served, it must still
    # exclude all of a longer history, in the SavedModel and in TFLite,
    # and refuse a bad id in the part it does not read.
    model, _, _ = trained
    rng = np.random.default_rng(5)
    history = np.stack([rng.permutation(model.num_items)[:45] for _ in range(3)])
    inputs = {"item_history": history.astype(np.int64)}
    ids, _ = model.recommend(inputs, k=10)
    assert not set(ids.numpy()[0].tolist()) & set(history[0].tolist())
    testing.check_saved_model(model, tmp_path, k=10, inputs=inputs, use_cli=False)
    lite = testing.check_tflite(model, tmp_path, k=10, inputs=inputs)
    early_bad = inputs["item_history"][:1].copy()
    early_bad[0, 0] = model.num_items
    for signature, extra in (
        ("serving_default", {}),
        ("score_items", {"item_ids": [[1, 2]]}),
    ):
        with pytest.raises(RuntimeError, match="out of bounds"):
            testing.run_tflite(lite, signature, {"item_history": early_bad, **extra})


def test_attention_heatmap_png(trained, tmp_path):
    from keras_rec import plots

    model, split, _ = trained
    weights = plots.average_attention(model, split.test, max_users=50)
    assert weights.shape == (2, 20, 20)
    # Every position that some user's history reaches has a row summing to 1.
    np.testing.assert_allclose(weights[:, -5:].sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(weights[0], k=1) == 0.0)
    path = plots.save_attention_heatmap(model, split.test, tmp_path / "a.png")
    with open(path, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    popularity = Popularity(split.num_items)
    assert (
        plots.save_attention_heatmap(popularity, split.test, tmp_path / "p.png") is None
    )

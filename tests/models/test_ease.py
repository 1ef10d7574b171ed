import json
import resource
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import scipy.sparse as sp

from keras_rec.data import make_split, make_synthetic
from keras_rec.data.datasets import Dataset
from keras_rec.data.interactions import Interactions
from keras_rec.data.pipelines import user_rows_dataset
from keras_rec.evaluation import evaluate
from keras_rec.export import testing
from keras_rec.losses.multinomial import MultinomialLogLikelihood
from keras_rec.models import ease as ease_module
from keras_rec.models.ease import EASE, InsufficientMemoryError, ease_weights
from keras_rec.models.mult_vae import MultVAE
from keras_rec.models.popularity import Popularity


def _numpy_ease(matrix: np.ndarray, l2: float) -> np.ndarray:
    """The paper's formula, independently: LU inverse, then B = I - P / diag(P)."""
    gram = matrix.T @ matrix + l2 * np.eye(matrix.shape[1])
    inverse = np.linalg.inv(gram)
    return np.eye(matrix.shape[1]) - inverse / np.diag(inverse)


@pytest.fixture(scope="module")
def split():
    data = make_synthetic(num_users=500, num_items=120, mean_length=20, seed=3)
    return make_split(
        Dataset("synthetic", data), "strong_generalization", num_heldout_users=60
    )


@pytest.fixture(scope="module")
def fitted(split):
    return EASE(split.num_items, l2=50.0).fit_closed_form(split.train)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("inverse_block", [4096, 64])
def test_closed_form_matches_numpy(monkeypatch, inverse_block, dtype):
    # Blocks of 64 rows: 4 full blocks and a partial one in `write_weights`,
    # the Gram matrix and (with `inverse_block=64`) the blocked inverse;
    # `inverse_block=4096` inverts with one LAPACK call. float32 takes the
    # `s` LAPACK routines (the fallback for large item counts).
    monkeypatch.setattr(ease_module, "BLOCK", 64)
    monkeypatch.setattr(ease_module, "INVERSE_BLOCK", inverse_block)
    rng = np.random.default_rng(0)
    dense = (rng.random((300, 290)) < 0.05).astype(np.float64)
    expected = _numpy_ease(dense, 7.5)
    weights = ease_weights(sp.csr_matrix(dense), 7.5, dtype)
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(np.diag(weights), 0.0)
    np.testing.assert_allclose(weights, expected, rtol=0, atol=1e-4)


def test_model_scores_are_history_times_b(split, fitted):
    dense = split.train.to_csr().toarray().astype(np.float64)
    weights = _numpy_ease(dense, 50.0)
    history = {"item_history": np.array([[-1, 4, 9, 4], [0, 1, 2, 3]])}
    rows = np.zeros((2, split.num_items))
    rows[0, [4, 9]] = 1
    rows[1, [0, 1, 2, 3]] = 1
    np.testing.assert_allclose(
        fitted.score_all(history), rows @ weights, rtol=0, atol=1e-4
    )
    assert not fitted.trainable_weights


def test_ranking_beats_popularity(split, fitted):
    popularity = Popularity(split.num_items).fit_closed_form(split.train)
    ours = evaluate(fitted, split.test, "strong_generalization")
    theirs = evaluate(popularity, split.test, "strong_generalization")
    assert ours["ndcg@100"] > theirs["ndcg@100"], (ours, theirs)
    assert ours["recall@20"] > theirs["recall@20"], (ours, theirs)


def test_keras_save_load_keeps_b(fitted, tmp_path):
    path = str(tmp_path / "ease.keras")
    fitted.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        restored.item_item.kernel.numpy(), fitted.item_item.kernel.numpy()
    )
    history = {"item_history": np.array([[3, 5, -1]])}
    np.testing.assert_allclose(restored.score_all(history), fitted.score_all(history))
    assert restored.get_config() == fitted.get_config()


def test_exports_match_the_model(fitted, tmp_path):
    testing.check_saved_model(fitted, tmp_path, use_cli=False)
    testing.check_tflite(fitted, tmp_path)


def test_memory_is_checked_before_allocating(monkeypatch):
    monkeypatch.setattr(ease_module, "available_memory", lambda: 10_000)
    with pytest.raises(InsufficientMemoryError, match="GiB"):
        EASE(num_items=100)
    # 1,000 items: 4 MB for B fits, the fit's 8 MB float64 inverse does not.
    monkeypatch.setattr(ease_module, "available_memory", lambda: 6_000_000)
    model = EASE(num_items=1000, precision="float64")
    train = Interactions([0, 1], [2, 3], num_users=2, num_items=1000)
    with pytest.raises(MemoryError, match="EASE's fit"):
        model.fit_closed_form(train)
    with pytest.raises(ValueError, match="EASE's fit"):  # train_all goes on
        model.fit_closed_form(train)


def test_auto_precision_falls_back_to_float32_when_float64_does_not_fit(
    monkeypatch,
):
    monkeypatch.setattr(ease_module, "BLOCK", 64)
    items = 1000
    rng = np.random.default_rng(1)
    matrix = sp.csr_matrix((rng.random((400, items)) < 0.02).astype(np.float64))
    float64 = ease_module.closed_form_bytes(items, 8)
    float32 = ease_module.closed_form_bytes(items, 4)
    assert float32 < float64
    monkeypatch.setattr(ease_module, "available_memory", lambda: float32 + 1000)
    with pytest.warns(UserWarning, match="in float64, more than.*float32 instead"):
        model = EASE(items, l2=20.0).fit_closed_form(matrix)
    np.testing.assert_allclose(
        model.item_item.kernel.numpy(),
        ease_weights(matrix, 20.0),
        rtol=0,
        atol=1e-4,
    )
    with pytest.raises(
        InsufficientMemoryError, match="EASE's fit for 1000 items in float64"
    ):
        EASE(items, l2=20.0, precision="float64").fit_closed_form(matrix)


def test_available_memory_is_positive_and_plausible():
    available = ease_module.available_memory()
    assert 0 < available < 1 << 50


def test_not_positive_definite_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(ease_module, "INVERSE_BLOCK", 2)
    indefinite = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(np.linalg.LinAlgError, match="not positive"):
        ease_module.spd_inverse_upper(indefinite)


def test_fit_rejects_a_mismatched_matrix():
    with pytest.raises(ValueError, match="num_items"):
        EASE(num_items=4).fit_closed_form(sp.csr_matrix(np.ones((2, 5))))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_items": 0}, "num_items"),
        ({"num_items": 4, "l2": 0.0}, "l2"),
        ({"num_items": 4, "precision": "float16"}, "precision"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EASE(**kwargs)


def test_config_json_round_trip():
    model = EASE(num_items=7, l2=12.5, precision="float32")
    clone = EASE.from_config(json.loads(json.dumps(model.get_config())))
    assert clone.get_config() == model.get_config()


def _ml20m_shaped(seed=0, users=136_677, items=20_108, draws=12_500_000):
    """A binary matrix of ML-20M's shape: heavy-tailed lengths, Zipf items;
    12.5M draws leave ~10.1M distinct interactions (ML-20M: 10.0M of 4+ stars)."""
    rng = np.random.default_rng(seed)
    lengths = np.maximum(5, rng.lognormal(3.5, 1.1, users)).astype(np.int64)
    lengths = np.minimum(lengths * draws // lengths.sum(), items // 2)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    cumulative = np.cumsum(popularity / popularity.sum())
    picked = np.searchsorted(cumulative, rng.random(lengths.sum()))
    matrix = sp.csr_matrix(
        (
            np.ones(len(picked), np.float32),
            np.minimum(picked, items - 1),
            np.concatenate([[0], np.cumsum(lengths)]),
        ),
        shape=(users, items),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _peak_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@pytest.mark.large
def test_ml20m_scale_vae_epoch_and_ease_fit_fit_in_memory():
    begin = time.perf_counter()
    matrix = _ml20m_shaped()
    print(
        f"\nmatrix {matrix.shape}, {matrix.nnz:,} interactions, built in "
        f"{time.perf_counter() - begin:.1f} s; peak RSS {_peak_gib():.2f} GiB"
    )
    items = matrix.shape[1]
    vae = MultVAE(items, seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3), loss=MultinomialLogLikelihood())
    begin = time.perf_counter()
    history = vae.fit(user_rows_dataset(matrix, 500, seed=0, epoch=0), verbose=0)
    print(
        f"Mult-VAE epoch: {time.perf_counter() - begin:.1f} s, loss "
        f"{history.history['loss'][0]:.2f}; peak RSS {_peak_gib():.2f} GiB"
    )
    assert np.isfinite(history.history["loss"][0])
    del vae
    before = _peak_gib()
    begin = time.perf_counter()
    model = EASE(items, l2=500.0).fit_closed_form(matrix)
    print(
        f"EASE fit: {time.perf_counter() - begin:.1f} s; peak RSS "
        f"{_peak_gib():.2f} GiB (estimate {4 * items**2 / 2**30:.2f} GiB for B + "
        f"{ease_module.closed_form_bytes(items) / 2**30:.2f} GiB for the fit)"
    )
    weights = model.item_item.kernel.numpy()
    assert np.all(np.isfinite(weights)) and not np.any(np.diag(weights))
    grown = _peak_gib() - before
    estimate = (4 * items**2 + ease_module.closed_form_bytes(items)) / 2**30
    assert grown < 1.25 * estimate, (grown, estimate)


_TWO_REPLICAS = """
import numpy as np, scipy.sparse as sp, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)
from keras_rec.models.ease import EASE, ease_weights
matrix = sp.random(60, 25, density=0.2, format="csr", dtype=np.float32, random_state=0)
matrix.data[:] = 1.0
with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
    model = EASE(num_items=25, l2=5.0)
model.fit_closed_form(matrix)
expected = ease_weights(matrix, 5.0)
print([float(np.abs(copy.numpy() - expected).max()) for copy in model.item_item.kernel.value.values])
"""


def test_fit_writes_every_replica_of_a_mirrored_kernel():
    # `B` is written in place row block by row block; under a strategy each
    # replica holds its own copy and all of them must get it. Two logical
    # CPUs need a fresh process (they are fixed when TensorFlow starts).
    output = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICAS],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    errors = json.loads(output.strip().splitlines()[-1])
    assert len(errors) == 2
    assert max(errors) == 0.0


def test_fit_binarises_a_matrix_of_counts_and_keeps_it():
    # The paper's X is binary: counts or ratings count as 1, and the
    # caller's matrix is not changed.
    rng = np.random.default_rng(1)
    binary = (rng.random((80, 30)) < 0.2).astype(np.float32)
    counts = sp.csr_matrix(binary * rng.integers(1, 5, size=binary.shape))
    before = counts.toarray()
    from_counts = EASE(30, l2=5.0).fit_closed_form(counts)
    from_binary = EASE(30, l2=5.0).fit_closed_form(sp.csr_matrix(binary))
    np.testing.assert_allclose(
        from_counts.item_item.kernel.numpy(), from_binary.item_item.kernel.numpy()
    )
    np.testing.assert_array_equal(counts.toarray(), before)

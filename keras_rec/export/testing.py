"""Parity checks between a Keras `Recommender` and its exports, for tests.

Any model that fulfils the `Recommender` contract can reuse these:

```python
from keras_rec.export import testing

def test_export(tmp_path):
    model = NeuMF(num_users=50, num_items=40)
    testing.check_saved_model(model, tmp_path, seen_items=train.to_csr())
    testing.check_tflite(model, tmp_path, seen_items=train.to_csr())
```

The SavedModel is run with the `saved_model_cli run` command-line tool (the
session-based loader TF Serving uses), the TFLite model with LiteRT's
`Interpreter`; both are compared with the model's `recommend` and
`score_items`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from keras_rec.export.saved_model import (
    ITEM_IDS,
    SCORE_ITEMS,
    SCORES,
    SERVING_DEFAULT,
    check_int64_ids,
    export_saved_model,
)
from keras_rec.export.tflite import export_tflite
from keras_rec.models.base import ITEM_HISTORY, USER_ID

ATOL = 1e-5


class SavedModelCliError(RuntimeError):
    """`saved_model_cli run` failed; the message holds its stderr."""


def example_inputs(
    model: keras.Model,
    num_users: int | None = None,
    batch_size: int = 4,
    history_length: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Valid int64 inputs for `model`: user ids, or left-padded histories.

    Args:
        model: a `Recommender`.
        num_users: number of users (id-based models); defaults to
            `model.num_users`.
        batch_size: number of rows.
        history_length: width of the histories; defaults to
            `model.history_length`, else 6.
        seed: seed of the draw.

    Returns:
        `{"user_id": [B]}` covering the first and last user, or
        `{"item_history": [B, L]}` with 1 to `L` distinct items per row,
        padded with -1 on the left.
    """
    rng = np.random.default_rng(seed)
    if model.input_kind == USER_ID:
        num_users = num_users or model.num_users
        users = rng.integers(0, num_users, size=batch_size)
        users[0], users[-1] = 0, num_users - 1
        return {USER_ID: users.astype(np.int64)}
    length = history_length or getattr(model, "history_length", None) or 6
    length = min(length, model.num_items)
    history = np.full((batch_size, length), -1, np.int64)
    for row in range(batch_size):
        size = 1 + (row * (length - 1)) // max(1, batch_size - 1)
        history[row, length - size :] = rng.choice(model.num_items, size, False)
    return {ITEM_HISTORY: history}


def candidate_items(
    model: keras.Model, batch_size: int, num_candidates: int = 5, seed: int = 1
) -> np.ndarray:
    """`[batch_size, num_candidates]` int64 item ids to score."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, model.num_items, size=(batch_size, num_candidates))


def seen_rows(seen_items: sp.csr_matrix, user_ids: np.ndarray) -> np.ndarray:
    """Each user's row of `seen_items` as a `[B, L]` id matrix padded with -1."""
    rows = [
        seen_items.indices[seen_items.indptr[u] : seen_items.indptr[u + 1]]
        for u in np.asarray(user_ids)
    ]
    width = max(1, max(len(row) for row in rows))
    padded = np.full((len(rows), width), -1, np.int64)
    for index, row in enumerate(rows):
        padded[index, : len(row)] = row
    return padded


def expected_recommendations(
    model: keras.Model,
    inputs: dict[str, np.ndarray],
    k: int,
    seen_items: sp.csr_matrix | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`model.recommend` with the user's `seen_items` excluded, as NumPy."""
    tensors = {name: tf.constant(value, tf.int64) for name, value in inputs.items()}
    exclude = None
    if model.input_kind == USER_ID and seen_items is not None:
        exclude = tf.constant(seen_rows(seen_items, inputs[USER_ID]))
    ids, scores = model.recommend(tensors, k=k, exclude=exclude)
    return np.asarray(ids), np.asarray(scores)


def expected_scores(
    model: keras.Model, inputs: dict[str, np.ndarray], item_ids: np.ndarray
) -> np.ndarray:
    """`model.score_items` as NumPy."""
    tensors = {name: tf.constant(value, tf.int64) for name, value in inputs.items()}
    return np.asarray(model.score_items(tensors, tf.constant(item_ids, tf.int64)))


def excluded_items(
    model: keras.Model,
    inputs: dict[str, np.ndarray],
    seen_items: sp.csr_matrix | None = None,
) -> list[set[int]]:
    """The ids each row's recommendations must not contain."""
    if model.input_kind == USER_ID:
        rows = seen_rows(seen_items, inputs[USER_ID])
    else:
        rows = inputs[ITEM_HISTORY]
    return [{int(i) for i in row if i >= 0} for row in rows]


def assert_same_top_k(
    model: keras.Model,
    inputs: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    expected: tuple[np.ndarray, np.ndarray],
    excluded: list[set[int]] | None = None,
    atol: float = ATOL,
) -> None:
    """Checks a top-k output against `expected` `(ids, scores)`.

    Scores must match position by position (none NaN), and each returned id
    must carry its returned score under `model.score_all`; ids must be
    distinct in a row and never in `excluded`, and no item but those may
    score above a row's last returned item. Ids must also equal the
    expected ids wherever the score is not tied (within `atol`) with
    another candidate; among tied items the order, and at the last
    position the choice, is arbitrary. Pick `k` below the number of items a
    row may recommend.

    `excluded` (each row's excluded ids) defaults to the request's history
    for a history-based model (`excluded_items`); an id-based model's
    seen items must be passed, else none count as excluded.
    """
    if excluded is None and model.input_kind == ITEM_HISTORY:
        excluded = excluded_items(model, inputs)
    ids, scores = np.asarray(actual[ITEM_IDS]), np.asarray(actual[SCORES])
    expected_ids, expected_values = expected
    assert ids.dtype == np.int64, f"item_ids dtype {ids.dtype}, expected int64"
    assert scores.dtype == np.float32, f"scores dtype {scores.dtype}, expected float32"
    assert ids.shape == expected_ids.shape, (ids.shape, expected_ids.shape)
    # assert_allclose counts NaN as equal to NaN: a NaN score is an error.
    assert not np.isnan(scores).any(), f"NaN scores returned: {scores}"
    np.testing.assert_allclose(scores, expected_values, rtol=0, atol=atol)
    tensors = {name: tf.constant(value, tf.int64) for name, value in inputs.items()}
    all_scores = np.asarray(model.score_all(tensors))
    np.testing.assert_allclose(
        np.take_along_axis(all_scores, ids, axis=1), scores, rtol=0, atol=atol
    )
    gaps = np.abs(np.diff(expected_values, axis=1)) > atol
    untied = np.ones(expected_ids.shape, bool)
    untied[:, 1:] &= gaps
    untied[:, :-1] &= gaps
    for row, items in enumerate(ids):
        assert len(set(items.tolist())) == len(items), f"repeated ids: {items}"
        seen = set() if excluded is None else excluded[row] & set(items.tolist())
        assert not seen, f"row {row} recommends excluded items {sorted(seen)}"
        # The last item may tie with the best item left out.
        left_out = list(items) + ([] if excluded is None else sorted(excluded[row]))
        rest = np.delete(all_scores[row], left_out)
        # Checked against the model's own scores, not against `expected`
        # (which may come from the same top-k code): nothing left out
        # scores above the last item returned.
        assert not rest.size or rest.max() <= scores[row, -1] + atol, (
            f"row {row}: an item left out scores {rest.max()}, above the "
            f"last returned score {scores[row, -1]}"
        )
        if rest.size and rest.max() >= scores[row, -1] - atol:
            untied[row, -1] = False
    np.testing.assert_array_equal(ids[untied], expected_ids[untied])


def _int64_ids(name: str, value) -> np.ndarray:
    """`value` as int64, or `ValueError` naming `name` for non-integer ids
    (a float would be truncated) and unsigned ids past int64 (they wrap)."""
    array = np.asarray(value)
    if array.size:  # an empty list is float to NumPy
        check_int64_ids(name, array)
    return array.astype(np.int64)


def instances_to_inputs(instances: list[dict]) -> dict[str, np.ndarray]:
    """TF Serving row format (`"instances"`) to batched int64 arrays.

    Args:
        instances: one dict per example, e.g. `[{"user_id": 3}, {"user_id": 7}]`;
            every dict has the same keys, and lists have the same length.

    Returns:
        `{"user_id": array([3, 7])}`.
    """
    names = set(instances[0])
    for instance in instances:
        if set(instance) != names:
            raise ValueError(f"Instances have different inputs: {instances}")
    return {name: _int64_ids(name, [i[name] for i in instances]) for name in names}


def run_saved_model_cli(
    path: str | os.PathLike, signature: str, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Runs a signature with `saved_model_cli run` in a subprocess.

    `saved_model_cli` loads the SavedModel by its SignatureDefs into a
    session, as TF Serving's C++ loader does, so a model whose variables
    are not tracked or whose signature is malformed fails here.

    Args:
        path: the SavedModel folder.
        signature: signature name.
        inputs: `{input_name: int array}`, passed with `--inputs` as
            `.npy` files (a literal on the command line would meet the
            system's limit on one argument's length for long histories).

    Returns:
        `{output_name: np.ndarray}`, read back from `--outdir`.

    Raises:
        SavedModelCliError: the tool failed (e.g. an assert fired); the
            message holds its stderr.
    """
    with tempfile.TemporaryDirectory() as scratch:
        outdir = os.path.join(scratch, "out")
        os.makedirs(outdir)
        files = []
        for name, value in inputs.items():
            file = os.path.join(scratch, f"input_{len(files)}.npy")
            np.save(file, _int64_ids(name, value))
            files.append(f"{name}={file}")
        command = [
            *_saved_model_cli(),
            "run",
            "--dir",
            os.fspath(path),
            "--tag_set",
            "serve",
            "--signature_def",
            signature,
            "--inputs",
            ";".join(files),
            "--outdir",
            outdir,
        ]
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        result = subprocess.run(
            command, capture_output=True, text=True, env=environment, check=False
        )
        if result.returncode != 0:
            raise SavedModelCliError(
                f"saved_model_cli run --signature_def {signature} failed "
                f"(exit {result.returncode}):\n{result.stderr[-4000:]}"
            )
        return {
            name[: -len(".npy")]: np.load(os.path.join(outdir, name))
            for name in os.listdir(outdir)
            if name.endswith(".npy")
        }


def _saved_model_cli() -> list[str]:
    """The `saved_model_cli` script of this environment, or its module."""
    script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if os.path.isfile(script):
        return [script]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def run_tflite(
    path: str | os.PathLike, signature: str, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Runs a signature of a `.tflite` model with LiteRT's `Interpreter`."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.fspath(path))
    runner = interpreter.get_signature_runner(signature)
    return runner(**{name: _int64_ids(name, v) for name, v in inputs.items()})


def tflite_operators(path: str | os.PathLike) -> list[str]:
    """Names of the operators a `.tflite` file uses, in all its subgraphs.

    Builtin ops by their `BuiltinOperator` name; custom ops (Flex ops among
    them) as `"CUSTOM:<code>"`, e.g. `"CUSTOM:FlexRandomUniform"`.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as file:
        flatbuffer = schema.ModelT.InitFromPackedBuf(file.read(), 0)
    names = {
        value: key
        for key, value in vars(schema.BuiltinOperator).items()
        if not key.startswith("_")
    }
    operators = []
    for code in flatbuffer.operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode
            custom = custom.decode() if isinstance(custom, bytes) else custom
            operators.append(f"CUSTOM:{custom}")
        else:
            operators.append(names[builtin])
    return sorted(operators)


def check_saved_model(
    model: keras.Model,
    directory: str | os.PathLike,
    seen_items: sp.csr_matrix | None = None,
    k: int = 5,
    inputs: dict[str, np.ndarray] | None = None,
    use_cli: bool = True,
    atol: float = ATOL,
) -> str:
    """Exports `model` and checks both signatures against the Keras model.

    `serving_default` must give `model.recommend`'s ids and scores, never an
    excluded item; `score_items` must give `model.score_items`.

    Args:
        model: a built `Recommender`.
        directory: a scratch folder; the export goes to `directory/<name>/1`.
        seen_items: the CSR matrix of seen items (id-based models).
        k: number of recommendations.
        inputs: the requests; defaults to `example_inputs(model, ...)`.
        use_cli: run the signatures with `saved_model_cli` (slow, a few
            seconds per call, but the TF Serving loader) rather than
            `tf.saved_model.load`.
        atol: absolute tolerance on the scores.

    Returns:
        The export folder.
    """
    from keras_rec.export.saved_model import load_serving

    path = export_saved_model(
        model, os.path.join(directory, model.name, "1"), k=k, seen_items=seen_items
    )
    if inputs is None:
        num_users = None if seen_items is None else seen_items.shape[0]
        inputs = example_inputs(model, num_users=num_users)
    batch = len(next(iter(inputs.values())))
    candidates = candidate_items(model, batch)

    def run(signature, feed):
        if use_cli:
            return run_saved_model_cli(path, signature, feed)
        return load_serving(path, signature)(**feed)

    actual = run(SERVING_DEFAULT, inputs)
    assert_same_top_k(
        model,
        inputs,
        actual,
        expected_recommendations(model, inputs, k, seen_items),
        excluded_items(model, inputs, seen_items),
        atol=atol,
    )
    scores = run(SCORE_ITEMS, {**inputs, ITEM_IDS: candidates})[SCORES]
    assert scores.dtype == np.float32
    np.testing.assert_allclose(
        scores, expected_scores(model, inputs, candidates), rtol=0, atol=atol
    )
    return path


def check_tflite(
    model: keras.Model,
    directory: str | os.PathLike,
    seen_items: sp.csr_matrix | None = None,
    k: int = 5,
    history_length: int | None = None,
    inputs: dict[str, np.ndarray] | None = None,
    atol: float = ATOL,
) -> str:
    """Converts `model` to TFLite and checks LiteRT against TensorFlow.

    The file must use builtin operators only (no Flex/custom ops), and
    LiteRT's outputs for both signatures, at batch size 1 and at the full
    batch (a resized input), must equal the Keras model's `recommend` and
    `score_items`, computed by TensorFlow.

    Args:
        model: a built `Recommender`.
        directory: a scratch folder; the file is `directory/<name>.tflite`.
        seen_items: the CSR matrix of seen items (id-based models).
        k: number of recommendations.
        history_length: fixed history length (history-based models);
            `None` (default): resizable.
        inputs: the requests; defaults to `example_inputs(model, ...)`.
        atol: absolute tolerance on the scores (LiteRT's XNNPACK kernels may
            sum in another order than TensorFlow).

    Returns:
        The `.tflite` path.
    """
    path = export_tflite(
        model,
        os.path.join(directory, f"{model.name}.tflite"),
        k=k,
        seen_items=seen_items,
        history_length=history_length,
    )
    custom = [op for op in tflite_operators(path) if op.startswith("CUSTOM")]
    assert not custom, f"{path} uses non-builtin ops: {custom}"
    if inputs is None:
        num_users = None if seen_items is None else seen_items.shape[0]
        inputs = example_inputs(
            model, num_users=num_users, history_length=history_length
        )
    batch = len(next(iter(inputs.values())))
    candidates = candidate_items(model, batch)
    for rows in (slice(0, 1), slice(0, batch)):
        feed = {name: value[rows] for name, value in inputs.items()}
        assert_same_top_k(
            model,
            feed,
            run_tflite(path, SERVING_DEFAULT, feed),
            expected_recommendations(model, feed, k, seen_items),
            excluded_items(model, feed, seen_items),
            atol=atol,
        )
        scores = run_tflite(path, SCORE_ITEMS, {**feed, ITEM_IDS: candidates[rows]})
        np.testing.assert_allclose(
            scores[SCORES],
            expected_scores(model, feed, candidates[rows]),
            rtol=0,
            atol=atol,
        )
    return path


def json_blocks(markdown: str) -> list[dict]:
    """The ```json code blocks of a Markdown text, parsed."""
    blocks, inside, lines = [], False, []
    for line in markdown.splitlines():
        if not inside and line.strip() == "```json":
            inside, lines = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append(json.loads("\n".join(lines)))
        elif inside:
            lines.append(line)
    return blocks


__all__ = [
    "SavedModelCliError",
    "assert_same_top_k",
    "candidate_items",
    "check_saved_model",
    "check_tflite",
    "example_inputs",
    "excluded_items",
    "expected_recommendations",
    "expected_scores",
    "instances_to_inputs",
    "json_blocks",
    "run_saved_model_cli",
    "run_tflite",
    "seen_rows",
    "tflite_operators",
]

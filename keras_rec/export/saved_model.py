"""SavedModel export for TF Serving: top-k `serving_default` and `score_items`.

The exported functions are built from `Recommender.score_all` /
`score_items` and the TFLite-builtin top-k helpers of
`keras_rec.models.base`, so the SavedModel, the TFLite model and the Keras
model's `recommend` share one definition of "top-k with seen items removed".
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from keras_rec.models.base import (
    ID_RANGES,
    ITEM_HISTORY,
    ITEM_IDS,
    USER_ID,
    exclude_and_top_k,
    gather_rows,
)

SERVING_DEFAULT = "serving_default"
SCORE_ITEMS = "score_items"
SCORES = "scores"
INFO_FILE = "export_info.json"
#: Where the TFLite variant sends an invalid history id: far outside every
#: table, so that the interpreter's bounds check fails instead of the id
#: being read as padding.
OUT_OF_RANGE_ID = 2**30


def serving_functions(
    model: keras.Model,
    k: int,
    seen_items: sp.csr_matrix | None = None,
    validate: bool = True,
    history_length: int | None = None,
) -> dict[str, tuple[Callable, list[tf.TensorSpec]]]:
    """The two serving functions of `model` and their input signatures.

    Shared by `export_saved_model` and `export_tflite`.

    Args:
        model: a built `keras_rec` `Recommender`.
        k: int. Number of recommendations `serving_default` returns.
        seen_items: `[num_users, num_items]` CSR matrix of the items to exclude
            for each user; required for `user_id` models, not used by
            `item_history` models (they exclude the request's history).
        validate: bool. Whether to add `tf.debugging` asserts on the ids
            (TFLite has no Assert op, so the TFLite export turns them off).
        history_length: int or None. Fixed history length of the signature
            (`None`: any length).

    Returns:
        `{signature_name: (fn, input_signature)}` for `serving_default` and
        `score_items`; `fn` takes the ids as positional tensors and returns a
        dict of tensors.
    """
    kind = _check_model(model)
    num_items = int(model.num_items)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"`k` must be an int. Received k={k!r}")
    if not 1 <= k <= num_items:
        raise ValueError(f"`k` must lie in [1, num_items={num_items}]. Received k={k}")
    if kind == USER_ID:
        num_users, indptr, indices = _seen_constants(model, seen_items)
        indptr = tf.constant(indptr, name="indptr")
        indices = tf.constant(indices, name="indices")
        query_spec = tf.TensorSpec([None], tf.int64, name=USER_ID)

        def excluded(user_id):
            return gather_rows(indptr, indices, user_id)

        def check_query(user_id):
            return _range_asserts(user_id, USER_ID, num_users)

        def poison_query(user_id):
            # An Embedding lookup wraps ids in [-num_users, -1] to the last
            # users: send every bad id past the table, where GATHER fails.
            bad = (user_id < 0) | (user_id >= num_users)
            return tf.where(bad, tf.constant(OUT_OF_RANGE_ID, tf.int64), user_id)

    else:
        query_spec = tf.TensorSpec([None, history_length], tf.int64, name=ITEM_HISTORY)
        needs_last_item = bool(getattr(model, "needs_last_item", False))

        def excluded(item_history):
            return item_history

        def has_item(item_history):
            return tf.reduce_any(item_history >= 0, axis=1, keepdims=True)

        def ends_with_padding(item_history):
            # `[B, 1]`: the last slot is padding, for a model that reads it.
            if not needs_last_item:
                return tf.zeros_like(item_history[:, :1], tf.bool)
            return item_history[:, -1:] < 0

        def poison_query(item_history):
            # Without asserts (TFLite), an id below -1 or at num_items (the
            # padding's spare column) would be read as padding, and a row of
            # padding only would get recommendations: send such ids (and an
            # empty row's first slot, and for SASRec a padded last slot) out
            # of range, so that the interpreter fails in its
            # GATHER/SCATTER_ND bounds check instead. A padding column is
            # put first, so that a history of width 0 has a slot to poison
            # (left padding changes no model's answer).
            pad = tf.fill([tf.shape(item_history)[0], 1], tf.constant(-1, tf.int64))
            item_history = tf.concat([pad, item_history], axis=1)
            bad = (item_history < -1) | (item_history >= num_items)
            empty = tf.logical_not(has_item(item_history))
            slots = tf.range(tf.shape(item_history)[1])
            first = slots == 0
            last = slots == tf.shape(item_history)[1] - 1
            bad = bad | (empty & first[None, :])
            bad = bad | (ends_with_padding(item_history) & last[None, :])
            # A model may read only the last slots (SASRec, a history longer
            # than `maxlen`): a row with a bad id anywhere fails in its last.
            row_is_bad = tf.reduce_any(bad, axis=1, keepdims=True)
            bad = bad | (row_is_bad & last[None, :])
            return tf.where(bad, tf.constant(OUT_OF_RANGE_ID, tf.int64), item_history)

        def check_query(item_history):
            every_row = tf.reduce_all(has_item(item_history))
            message = (
                "`item_history` has a row with no item (only PAD=-1): every "
                "history needs at least one item id"
            )
            checks = _range_asserts(item_history, ITEM_HISTORY, num_items) + [
                tf.debugging.assert_equal(every_row, True, message=message)
            ]
            if needs_last_item:
                ended = tf.reduce_any(ends_with_padding(item_history))
                message = (
                    f"`item_history` rows must end with their most recent item: "
                    f"{type(model).__name__} reads the last slot, and a row ends "
                    "with PAD=-1. Pad on the left"
                )
                checks.append(tf.debugging.assert_equal(ended, False, message=message))
            return checks

    def after_checks(make_checks, query, *tensors):
        # Without validation no Assert op is built at all (TFLite has none).
        if not validate:
            # Different batch sizes fail in GATHER's bounds check rather than
            # broadcast one row (a batched matmul would).
            same_rows = []
            for tensor in tensors:
                query, tensor = (
                    tf.gather(query, tf.range(tf.shape(tensor)[0])),
                    tf.gather(tensor, tf.range(tf.shape(query)[0])),
                )
                same_rows.append(tensor)
            return (poison_query(query), *(poison_items(t) for t in same_rows))
        with tf.control_dependencies(make_checks()):
            return tuple(tf.identity(tensor) for tensor in (query, *tensors))

    def recommend(query):
        (query,) = after_checks(lambda: check_query(query), query)
        scores = tf.cast(model.score_all({kind: query}), tf.float32)
        ids, values = exclude_and_top_k(scores, excluded(query), k)
        return {ITEM_IDS: ids, SCORES: values}

    def poison_items(item_ids):
        # A model may read a negative candidate as padding (SASRec's row 0):
        # without asserts, send bad candidates out of every table instead.
        bad = (item_ids < 0) | (item_ids >= num_items)
        return tf.where(bad, tf.constant(OUT_OF_RANGE_ID, tf.int64), item_ids)

    def score_items(query, item_ids):
        def checks():
            rows = tf.debugging.assert_equal(
                tf.shape(query)[0],
                tf.shape(item_ids)[0],
                message=(
                    f"`{ITEM_IDS}` must have one row per `{kind}` row; the "
                    "request's batch sizes differ"
                ),
            )
            return (
                check_query(query)
                + _range_asserts(item_ids, ITEM_IDS, num_items)
                + [rows]
            )

        query, item_ids = after_checks(checks, query, item_ids)
        scores = model.score_items({kind: query}, item_ids)
        return {SCORES: tf.cast(scores, tf.float32)}

    item_ids_spec = tf.TensorSpec([None, None], tf.int64, name=ITEM_IDS)
    return {
        SERVING_DEFAULT: (recommend, [query_spec]),
        SCORE_ITEMS: (score_items, [query_spec, item_ids_spec]),
    }


def export_saved_model(
    model: keras.Model,
    path: str | os.PathLike,
    k: int = 10,
    seen_items: sp.csr_matrix | None = None,
) -> str:
    """Writes a SavedModel for TF Serving with top-k and scoring signatures.

    Signatures (inputs int64, `PAD=-1`, histories left padded):

    * `serving_default`: `user_id` `[B]` (id-based models) or `item_history`
      `[B, L]` (history-based models) -> `item_ids` int64 `[B, k]` and
      `scores` float32 `[B, k]`, best first, with the user's `seen_items`
      (or the history's items) excluded;
    * `score_items`: the same input plus `item_ids` `[B, n]` -> `scores`
      float32 `[B, n]`.

    Ids are validated inside the graph: a `user_id` outside
    `[0, num_users)`, an item id outside `[0, num_items)` or a history with
    no item raise `InvalidArgumentError` naming the input. The export is
    atomic: it is built in a temporary folder next to `path` and renamed
    into place: a failed export leaves the previous one untouched. Replacing
    an existing folder takes two renames (the old one aside, the new one
    in), so for a moment `path` is absent; export to a new version number
    for a model TF Serving is serving. An `export_info.json` describing the signatures and
    their TF Serving REST request bodies is written inside the folder.

    Args:
        model: a built `keras_rec` `Recommender` (`input_kind`, `num_items`,
            `score_all`).
        path: the export folder. For TF Serving, a numbered version folder
            such as `models/bpr_mf/1`.
        k: int. Number of recommendations per request.
        seen_items: `[num_users, num_items]` CSR matrix (e.g.
            `train.to_csr()`), baked into the SavedModel as CSR constants and
            excluded from the recommendations. Required for `user_id` models;
            history-based models exclude the request's history and do not use
            it.

    Returns:
        The export folder, as a string.

    Raises:
        ValueError: `model` is not a built keras_rec `Recommender`; `k` is
            not an int in `[1, num_items]`; `seen_items` is missing for a
            `user_id` model, not a scipy.sparse matrix, or not of shape
            `(num_users, num_items)`; `path` exists as a file instead of a folder.
    """
    path = os.path.abspath(os.fspath(path))
    functions = serving_functions(model, k, seen_items)

    def write(directory: str) -> None:
        archive = build_archive(model, functions)
        archive.write_out(directory, verbose=False)
        info = export_info(model, k, functions, seen_items)
        with open(os.path.join(directory, INFO_FILE), "w") as file:
            json.dump(info, file, indent=2)
            file.write("\n")

    write_atomically(path, write, is_directory=True)
    return path


def build_archive(
    model: keras.Model, functions: dict[str, tuple[Callable, list[tf.TensorSpec]]]
) -> keras.export.ExportArchive:
    """A `keras.export.ExportArchive` tracking `model` with `functions` as endpoints.

    Args:
        model: the Keras model whose variables the functions read.
        functions: `{name: (fn, input_signature)}`, as `serving_functions`
            returns; `serving_default` is registered first.

    Returns:
        The archive, ready for `write_out`.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name in sorted(functions, key=lambda name: name != SERVING_DEFAULT):
        fn, signature = functions[name]
        archive.add_endpoint(name, fn, input_signature=signature)
    return archive


def load_serving(
    path: str | os.PathLike, signature: str = SERVING_DEFAULT
) -> Callable[..., dict[str, np.ndarray]]:
    """A Python callable for one signature of an exported SavedModel.

    Args:
        path: the export folder.
        signature: the signature name (`serving_default` or `score_items`).

    Returns:
        `fn(**inputs) -> {output_name: np.ndarray}`; inputs are array-likes
        keyed by the signature's input names, e.g. `fn(user_id=[3, 7])`.

    Raises:
        ValueError: `signature` is not one of the SavedModel's. The callable
            raises `ValueError` for a missing or unknown input, non-integer
            ids or a shape the signature does not take, and TensorFlow's
            `InvalidArgumentError` (from the graph's checks) for an id out of
            range or a history with no item.

    Example:
    >>> recommend = load_serving("models/bpr_mf/1")  # doctest: +SKIP
    >>> recommend(user_id=[3])["item_ids"]  # doctest: +SKIP
    """
    loaded = tf.saved_model.load(os.fspath(path))
    if signature not in loaded.signatures:
        raise ValueError(
            f"Unknown signature {signature!r}. The SavedModel at {path} has "
            f"{sorted(loaded.signatures)}"
        )
    function = loaded.signatures[signature]
    specs = function.structured_input_signature[1]

    def call(**inputs) -> dict[str, np.ndarray]:
        unknown = set(inputs) - set(specs)
        missing = set(specs) - set(inputs)
        if unknown or missing:
            raise ValueError(
                f"Signature {signature!r} takes inputs {sorted(specs)}. "
                f"Received {sorted(inputs)}"
            )
        tensors = {
            name: _request_tensor(name, value, specs[name])
            for name, value in inputs.items()
        }
        return {name: value.numpy() for name, value in function(**tensors).items()}

    call.loaded = loaded  # keeps the variables alive with the callable
    call.signature = signature
    return call


def check_int64_ids(name: str, array: np.ndarray) -> None:
    """Raises `ValueError` naming `name` when `array` does not hold integer
    ids (a float would be truncated) or holds unsigned ones past int64
    (they would wrap to negative ones)."""
    if array.dtype.kind not in "iu":
        raise ValueError(
            f"`{name}` must hold integer ids; received dtype {array.dtype}"
        )
    if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"`{name}` holds {array.max()}, past the int64 ids' range")


def _request_tensor(name: str, value, spec: tf.TensorSpec) -> tf.Tensor:
    """`value` as a tensor of `spec`, or `ValueError` naming `name` when its
    dtype or shape does not fit (a float id would be truncated)."""
    array = np.asarray(value)
    if spec.dtype.is_integer:
        check_int64_ids(name, array)
    if not spec.shape.is_compatible_with(array.shape):
        raise ValueError(
            f"`{name}` must have shape {spec.shape.as_list()} (None: any size); "
            f"received shape {list(array.shape)}"
        )
    return tf.constant(array, spec.dtype)


def export_info(
    model: keras.Model,
    k: int,
    functions: dict[str, tuple[Callable, list[tf.TensorSpec]]],
    seen_items: sp.csr_matrix | None = None,
) -> dict:
    """The `export_info.json` content: model, signatures and REST bodies.

    Args:
        model: the exported model.
        k: number of recommendations of `serving_default`.
        functions: the exported functions, as `serving_functions` returns.
        seen_items: the excluded items of id-based models.

    Returns:
        A JSON-serialisable dict.
    """
    kind = model.input_kind
    signatures = {}
    for name, (_, specs) in functions.items():
        outputs = (
            {
                ITEM_IDS: _spec_info(tf.int64, [None, k]),
                SCORES: _spec_info(tf.float32, [None, k]),
            }
            if name == SERVING_DEFAULT
            else {SCORES: _spec_info(tf.float32, [None, None])}
        )
        signatures[name] = {
            "inputs": {spec.name: _spec_info(spec.dtype, spec.shape) for spec in specs},
            "outputs": outputs,
        }
    info = {
        "model_class": type(model).__name__,
        "model_name": model.name,
        "input_kind": kind,
        "k": int(k),
        "num_items": int(model.num_items),
        "history_length": getattr(model, "history_length", None),
        "padding": -1,
        "excluded": (
            "the user's seen_items (CSR constants in the SavedModel)"
            if kind == USER_ID
            else "the items of the request's item_history"
        ),
        "signatures": signatures,
    }
    num_users = int(seen_items.shape[0]) if kind == USER_ID else 2
    info["rest_requests"] = rest_requests(kind, int(model.num_items), num_users)
    if kind == USER_ID:
        info["num_users"] = num_users
    return info


def rest_requests(
    input_kind: str, num_items: int, num_users: int = 2
) -> dict[str, dict]:
    """Example TF Serving REST request bodies (row format) for each signature.

    Args:
        input_kind: `"user_id"` or `"item_history"`.
        num_items: size of the item vocabulary (the example ids stay below it).
        num_users: number of users of a `"user_id"` model (the example ids
            stay below it).

    Returns:
        `{signature_name: request_body}`; POST a body to
        `http://host:8501/v1/models/<name>:predict`.
    """
    items = [i % num_items for i in (0, 1, 2)]
    if input_kind == USER_ID:
        first, second = {USER_ID: 0}, {USER_ID: 1 % num_users}
    else:
        first = {ITEM_HISTORY: [-1, items[1], items[0]]}
        second = {ITEM_HISTORY: [items[0], items[2], items[1]]}
    return {
        SERVING_DEFAULT: {
            "signature_name": SERVING_DEFAULT,
            "instances": [first, second],
        },
        SCORE_ITEMS: {
            "signature_name": SCORE_ITEMS,
            "instances": [
                {**first, ITEM_IDS: items},
                {**second, ITEM_IDS: items[::-1]},
            ],
        },
    }


def write_atomically(
    path: str, write: Callable[[str], None], is_directory: bool = True
) -> None:
    """Runs `write(temporary)` next to `path`, then renames the result to `path`.

    A failure inside `write` leaves `path` untouched. A file replaces an
    existing one in one atomic `os.replace`. A folder cannot be renamed over
    a non-empty one, so an existing folder is moved aside only once the new
    export is complete, then deleted; if the final rename fails it is moved
    back (and if even that fails it is kept in the staging folder, never
    deleted). A process killed between the two renames leaves no folder at
    `path` and the old one in the staging folder: the next call puts it
    back first.

    Args:
        path: absolute destination (a folder or a file).
        write: writes the export to the path it is given.
        is_directory: whether the export is a folder (else a single file).
    """
    parent, name = os.path.split(path)
    if is_directory and not os.path.exists(path):
        restore_interrupted(parent, name)
    if os.path.exists(path) and os.path.isdir(path) != is_directory:
        kind = "folder" if is_directory else "file"
        raise ValueError(
            f"Cannot export a {kind} to {path}: it exists and is not a {kind}"
        )
    os.makedirs(parent, exist_ok=True)
    # A dot name that is not a number: TF Serving ignores it while it is written.
    staging = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    target = os.path.join(staging, name)
    backup = os.path.join(staging, f"{name}.old")
    try:
        write(target)
        if not is_directory:
            os.replace(target, path)
            return
        os.chmod(target, 0o755)  # mkdtemp's 0o700 would hide it from a server
        if os.path.exists(path):
            os.rename(path, backup)
        try:
            os.rename(target, path)
        except BaseException:
            if os.path.exists(backup):
                os.rename(backup, path)
            raise
    finally:
        if os.path.exists(path) or not os.path.exists(backup):
            shutil.rmtree(staging, ignore_errors=True)


def restore_interrupted(parent: str, name: str) -> None:
    """Moves back the folder `write_atomically` had moved aside to
    `<parent>/.<name>.tmp-*/<name>.old` when it was killed before the new
    one took its place (the latest such backup, if there are several)."""
    backups = sorted(
        glob.glob(
            os.path.join(
                glob.escape(parent),
                f".{glob.escape(name)}.tmp-*",
                f"{glob.escape(name)}.old",
            )
        ),
        key=os.path.getmtime,
    )
    if not backups:
        return
    os.rename(backups[-1], os.path.join(parent, name))
    warnings.warn(
        f"Restored {os.path.join(parent, name)} from {backups[-1]}, left by an "
        "export that was interrupted",
        stacklevel=3,
    )
    shutil.rmtree(os.path.dirname(backups[-1]), ignore_errors=True)


def _check_model(model: keras.Model) -> str:
    kind = getattr(model, "input_kind", None)
    if kind not in (USER_ID, ITEM_HISTORY):
        raise ValueError(
            "`model` must be a keras_rec Recommender with input_kind "
            f"'{USER_ID}' or '{ITEM_HISTORY}'. Received {type(model).__name__} "
            f"with input_kind={kind!r}"
        )
    if not getattr(model, "built", True):
        raise ValueError(f"`model` {model.name} must be built before export")
    return kind


def _seen_constants(
    model: keras.Model, seen_items: sp.csr_matrix | None
) -> tuple[int, np.ndarray, np.ndarray]:
    """`(num_users, indptr, indices)` of `seen_items`, checked against `model`."""
    if seen_items is None:
        raise ValueError(
            f"`seen_items` is required for {type(model).__name__} (input_kind="
            f"'{USER_ID}'): pass the [num_users, num_items] CSR matrix of the "
            "items to exclude, e.g. `seen_items=train.to_csr()`"
        )
    if not sp.issparse(seen_items):
        raise ValueError(
            "`seen_items` must be a scipy.sparse CSR matrix. "
            f"Received {type(seen_items).__name__}"
        )
    seen_items = sp.csr_matrix(seen_items, copy=True)
    seen_items.sum_duplicates()
    seen_items.eliminate_zeros()  # a stored zero is not a seen item
    num_users, num_items = seen_items.shape
    expected_users = getattr(model, "num_users", num_users)
    if num_items != model.num_items or num_users != expected_users:
        raise ValueError(
            f"`seen_items` must have shape (num_users={expected_users}, "
            f"num_items={model.num_items}). Received shape {seen_items.shape}"
        )
    if seen_items.nnz >= 2**31:
        raise ValueError(f"`seen_items` has too many entries ({seen_items.nnz})")
    indptr = seen_items.indptr.astype(np.int32)
    # One spare entry past the last row, so that `gather_rows`' masked-out
    # position 0 is in range even when no user has a seen item.
    indices = np.append(seen_items.indices, -1).astype(np.int32)
    return int(num_users), indptr, indices


def _spec_info(dtype: tf.DType, shape) -> dict:
    return {"dtype": tf.as_dtype(dtype).name, "shape": list(tf.TensorShape(shape))}


def _range_asserts(ids: tf.Tensor, name: str, high: int) -> list[tf.Operation]:
    """Asserts `ids` in the range `ID_RANGES[name]`, up to `high`, with a
    message naming the input and the range."""
    _, low, size = ID_RANGES[name]
    pad = " or be PAD=-1" if low < 0 else ""
    message = (
        f"`{name}` must lie in [0, {size}={high}){pad}; the request has an id "
        "outside that range"
    )
    return [
        tf.debugging.assert_greater_equal(ids, tf.constant(low, tf.int64), message),
        tf.debugging.assert_less(ids, tf.constant(high, tf.int64), message),
    ]

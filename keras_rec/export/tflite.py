"""TFLite export: the SavedModel's signatures, builtin ops only, for LiteRT."""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf
from tensorflow.lite.python.convert import ConverterError

from keras_rec.export.saved_model import (
    SCORE_ITEMS,
    SERVING_DEFAULT,
    USER_ID,
    build_archive,
    serving_functions,
    write_atomically,
)


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    k: int = 10,
    seen_items: sp.csr_matrix | None = None,
    history_length: int | None = None,
) -> str:
    """Writes a `.tflite` model with the SavedModel's two signatures.

    The functions are those of `export_saved_model` (top-k with seen items
    excluded, and candidate scoring), converted with
    `tf.lite.OpsSet.TFLITE_BUILTINS` only, so LiteRT's interpreter runs them
    without the Flex delegate. Two differences:

    * no id validation: TFLite has no `Assert` op, so callers must send
      `user_id` in `[0, num_users)`, item ids in `[0, num_items)` and
      histories with at least one item. A bad id, a history of padding
      only or of width 0, or `score_items` rows that do not pair up, fails
      in the interpreter's bounds check (`RuntimeError: gather index out of
      bounds` or `scatter_nd ...`; different batch sizes may instead fail
      to prepare) without naming the input: invalid ids are sent out of
      range on purpose so that they are not read as padding or, for a
      negative user id, as the last user (popularity's `score_items`, which
      does not read the history, answers whatever the history);
    * the history length of history-based models is resizable like the
      batch, as in the SavedModel, unless `history_length` fixes it. The
      items excluded from the answer are those of the request's history,
      so a fixed length shorter than a user's history lets that user's
      older items be recommended again (a SASRec model reads only its last
      `maxlen` items either way, and excludes them all).

    Every dimension left open is resizable: the inputs are created with size
    1 there (`user_id` `[1]`, `item_history` `[1, L or 1]`, `item_ids`
    `[1, 1]`) and a LiteRT signature runner
    (`interpreter.get_signature_runner("serving_default")`) resizes them to
    each call's arrays. The file is written atomically (temp file, then
    rename).

    Args:
        model: a built `keras_rec` `Recommender`.
        path: the `.tflite` file to write.
        k: int. Number of recommendations of `serving_default`.
        seen_items: `[num_users, num_items]` CSR matrix of items to exclude,
            baked into the model; required for `user_id` models.
        history_length: int or None. Fixed history length of history-based
            models; `None` (default): resizable.

    Returns:
        The `.tflite` path, as a string.

    Raises:
        ValueError: `model` is not a built keras_rec `Recommender`; `k` is
            not an int in `[1, num_items]`; `seen_items` is missing for a
            `user_id` model, not a scipy.sparse matrix, or not of shape
            `(num_users, num_items)`; `path` exists as a folder instead of a file;
            `history_length` is not a positive int; the model needs ops outside
            TFLite's builtins (the message names them).
    """
    path = os.path.abspath(os.fspath(path))
    if history_length is not None and (
        isinstance(history_length, bool)
        or not isinstance(history_length, (int, np.integer))
        or history_length <= 0
    ):
        raise ValueError(
            "`history_length` must be a positive int or None. "
            f"Received history_length={history_length!r}"
        )
    if history_length is not None and getattr(model, "input_kind", None) == USER_ID:
        raise ValueError(
            f"`history_length` applies to item_history models; "
            f"{type(model).__name__} takes `{USER_ID}`"
        )
    functions = serving_functions(
        model, k, seen_items, validate=False, history_length=history_length
    )
    with tempfile.TemporaryDirectory() as directory:
        build_archive(model, functions).write_out(directory, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            directory, signature_keys=[SERVING_DEFAULT, SCORE_ITEMS]
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flatbuffer = converter.convert()
        except ConverterError as error:
            raise ValueError(
                f"{type(model).__name__} cannot be converted to TFLite with "
                "builtin ops only (LiteRT's interpreter cannot run Flex ops). "
                + _summary(error)
            ) from error

    def write(target: str) -> None:
        with open(target, "wb") as file:
            file.write(flatbuffer)

    write_atomically(path, write, is_directory=False)
    return path


def _summary(error: Exception) -> str:
    """The converter's lines that name the unsupported ops."""
    lines = [
        line.strip()
        for line in str(error).splitlines()
        if line.strip().startswith(("Custom ops:", "Flex ops:", "tf."))
    ]
    return " ".join(dict.fromkeys(lines)) or str(error)[-2000:]

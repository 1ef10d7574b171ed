"""Raw files / TFDS -> Interactions -> protocol splits -> tf.data pipelines."""

from keras_rec.data.datasets import (
    DATA_DIR_ENV,
    PROTOCOLS,
    Dataset,
    load_dataset,
    make_split,
    resolve_data_dir,
)
from keras_rec.data.interactions import Interactions
from keras_rec.data.pipelines import (
    PAD,
    bpr_dataset,
    pad_histories,
    pointwise_dataset,
    sequence_dataset,
    user_rows_dataset,
)
from keras_rec.data.readers import DataFormatError
from keras_rec.data.splits import (
    EvalSet,
    Split,
    given_split,
    leave_one_out,
    random_holdout,
    strong_generalization,
)
from keras_rec.data.synthetic import make_synthetic

__all__ = [
    "DATA_DIR_ENV",
    "PAD",
    "PROTOCOLS",
    "DataFormatError",
    "Dataset",
    "EvalSet",
    "Interactions",
    "Split",
    "bpr_dataset",
    "given_split",
    "leave_one_out",
    "load_dataset",
    "make_split",
    "make_synthetic",
    "pad_histories",
    "pointwise_dataset",
    "random_holdout",
    "resolve_data_dir",
    "sequence_dataset",
    "strong_generalization",
    "user_rows_dataset",
]

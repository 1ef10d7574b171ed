"""keras_rec: reference implementations of landmark recommender papers.

Importing the package registers every public Keras class under the
`keras_rec` package name, so saved `.keras` files load.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_rec import (  # noqa: E402
    data,
    evaluation,
    export,
    layers,
    losses,
    models,
    training,
)

__version__ = "0.1.0"
__all__ = ["data", "evaluation", "export", "layers", "losses", "models", "training"]

"""keras_rec: reference implementations of landmark recommender papers.

Importing the package registers every public Keras class under the
`keras_rec` package name, so saved `.keras` files load.

Imported before TensorFlow, it also turns on TensorFlow's oneDNN kernels
(`TF_ENABLE_ONEDNN_OPTS=1`, unless the variable is already set), which
TensorFlow leaves off on CPUs without AVX-512 VNNI/BF16, AVX-VNNI or AMX. On
such a CPU (a 2-core AMD EPYC with AVX2) they made NGCF's Gowalla training
step about 1.2x cheaper in CPU time, its full-ranking evaluation about 1.8x
faster and the Mult-VAE epoch up to 2x (README, "Speed"). TensorFlow reads
the variable once, when it loads: `train_all.py`, the tests and the
benchmarks that import TensorFlow before keras_rec set it first themselves.
Results can differ from TensorFlow's own kernels in the last bits (another
summation order); set the variable to 0 to keep those.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

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

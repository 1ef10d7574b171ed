"""Keras' Adam and Nadam with the update of each large variable fused by XLA.

Keras writes an optimizer's update as a dozen element-wise ops (Nadam:
`m += (g - m)(1 - beta_1)`, `v += ...`, `m_hat = ...`, `v_hat = ...`,
`w -= lr m_hat / (sqrt(v_hat) + eps)`), and TensorFlow runs each as its own
kernel, which reads and writes a whole variable-sized tensor. That is
harmless for small variables and the bottleneck for an item-item kernel
(Neural EASE, VASP: 420M floats, 1.6 GiB, at Gowalla's 20,490 most popular
items), where every step is memory-bound. Compiling the same update with
XLA (`tf.function(jit_compile=True)`) fuses it into one pass over the
gradient, the variable and the two moments.

The arithmetic is Keras' own `update_step`, traced and compiled once per
variable: its moments are found by a Python lookup on the variable, which
runs only while tracing, so one trace shared by two variables of the same
shape would update the second with the first one's moments. The result
equals the unfused optimizer's to float rounding and the
optimizer's variables, config and checkpoints are those of its Keras base
class. Weight decay, clipping, EMA and gradient accumulation run in
`apply` as in Keras, outside the fused part.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_rec.data.pipelines import check_count

#: Variables with fewer elements take Keras' update as it is (an XLA
#: compilation per variable costs more than it saves on them).
DEFAULT_FUSE_MIN_SIZE = 1 << 20


class _Untracked:
    """Holds the traced updates, one per variable index, out of the
    optimizer's tracked attributes (a `tf.function` attribute would be
    saved with a SavedModel)."""

    def __init__(self):
        self.updates = {}


class _FusedUpdate:
    """Mixin: `update_step` of variables of `fuse_min_size` elements or more,
    with a dense gradient, runs as one XLA computation."""

    def __init__(
        self,
        learning_rate=0.001,
        fuse_min_size: int = DEFAULT_FUSE_MIN_SIZE,
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, **kwargs)
        check_count(0, fuse_min_size=fuse_min_size)
        self.fuse_min_size = int(fuse_min_size)
        self._fused = _Untracked()

    def _fuses(self, gradient, variable) -> bool:
        size = variable.shape.num_elements()
        return (
            isinstance(gradient, tf.Tensor)
            and size is not None
            and size >= self.fuse_min_size
        )

    def update_step(self, gradient, variable, learning_rate):
        if not self._fuses(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        # One function per variable (not per shape: see the module docstring).
        index = self._get_variable_index(variable)
        update = self._fused.updates.get(index)
        if update is None:
            update = tf.function(super().update_step, jit_compile=True)
            self._fused.updates[index] = update
        # The learning rate is a Keras variable (or a schedule's value):
        # passed as a tensor so that the traced function takes it by value.
        return update(gradient, variable, tf.convert_to_tensor(learning_rate))

    def get_config(self):
        return {**super().get_config(), "fuse_min_size": self.fuse_min_size}


@keras.saving.register_keras_serializable(package="keras_rec")
class FusedAdam(_FusedUpdate, keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose update of each large variable is one XLA kernel.

    Same arguments, variables and results as `keras.optimizers.Adam` (to
    float rounding); see the module docstring for why it is faster.

    Args:
        learning_rate: float or schedule. Defaults to Keras' Adam default.
        fuse_min_size: int. Variables with fewer elements take Keras'
            unfused update.
        **kwargs: the other arguments of `keras.optimizers.Adam`.

    Example:
    >>> optimizer = FusedAdam(learning_rate=1e-3)
    >>> optimizer.get_config()["fuse_min_size"]
    1048576
    """


@keras.saving.register_keras_serializable(package="keras_rec")
class FusedNadam(_FusedUpdate, keras.optimizers.Nadam):
    """`keras.optimizers.Nadam` whose update of each large variable is one XLA kernel.

    Same arguments, variables and results as `keras.optimizers.Nadam` (to
    float rounding); see the module docstring for why it is faster. Made
    for an item-item kernel: Neural EASE, FLVAE and VASP train with it.

    Args:
        learning_rate: float or schedule. Defaults to Keras' Nadam default.
        fuse_min_size: int. Variables with fewer elements take Keras'
            unfused update.
        **kwargs: the other arguments of `keras.optimizers.Nadam`.

    Example:
    >>> optimizer = FusedNadam(learning_rate=1e-3)
    >>> optimizer.get_config()["fuse_min_size"]
    1048576
    """

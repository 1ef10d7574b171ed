"""A model's `seed` fixes all of its initial weights, with distinct draws.

Two models built in one process with the same seed must start equal: an
initializer the seed does not reach draws from the global generator, which
moves on between the builds (and differs from process to process). Two
same-shaped kernels of one model must differ: a seeded Keras initializer
returns the same values at every call, so a layer stack that shares one
would start with identical layers.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from keras_rec.models import (
    BPRMF,
    FLVAE,
    GMF,
    MLP,
    NGCF,
    VASP,
    LightGCN,
    MultDAE,
    MultVAE,
    NeuMF,
    NeuralEASE,
    RecVAE,
    SASRec,
)

GRAPH = sp.random(6, 9, density=0.4, format="csr", random_state=0)

BUILDERS = {
    "bpr_mf": lambda seed: BPRMF(6, 9, 4, seed=seed),
    "gmf": lambda seed: GMF(6, 9, 4, seed=seed),
    "mlp": lambda seed: MLP(6, 9, 4, num_layers=3, seed=seed),
    "neumf": lambda seed: NeuMF(6, 9, 4, num_layers=3, seed=seed),
    "ngcf": lambda seed: NGCF(6, 9, 4, [4, 4], seed=seed, interactions=GRAPH),
    "lightgcn": lambda seed: LightGCN(6, 9, 4, 2, seed=seed, interactions=GRAPH),
    "sasrec": lambda seed: SASRec(9, maxlen=5, hidden_dim=4, num_blocks=2, seed=seed),
    "mult_vae": lambda seed: MultVAE(9, hidden_dims=[6], latent_dim=3, seed=seed),
    "mult_dae": lambda seed: MultDAE(9, latent_dim=3, hidden_dims=[6], seed=seed),
    "recvae": lambda seed: RecVAE(
        9, hidden_dim=5, latent_dim=3, num_layers=3, gamma=0.005, seed=seed
    ),
    "neural_ease": lambda seed: NeuralEASE(9, seed=seed),
    # The papers' 7 encoder and 5 decoder layers: deep enough for the
    # blocks' per-layer seeds to meet the other layers' if they overlap.
    "flvae": lambda seed: FLVAE(
        9, hidden_dim=5, latent_dim=3, encoder_layers=7, decoder_layers=5, seed=seed
    ),
    "vasp": lambda seed: VASP(
        9, hidden_dim=5, latent_dim=3, encoder_layers=7, decoder_layers=5, seed=seed
    ),
}


def _random_weights(model) -> list:
    """The weights an initializer draws at random (not zeros or ones)."""
    return [
        w
        for w in model.weights
        if w.trainable and np.unique(np.asarray(w.numpy())).size > 1
    ]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_seed_fixes_every_initial_weight(name):
    first, second = BUILDERS[name](7), BUILDERS[name](7)
    drawn = _random_weights(first)
    assert drawn, "no randomly initialised weight"
    for a, b in zip(first.weights, second.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    # Another seed moves every drawn weight.
    other = {w.path: w.numpy() for w in BUILDERS[name](8).weights}
    for weight in drawn:
        assert not np.array_equal(weight.numpy(), other[weight.path]), weight.path


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_weights_start_from_different_draws(name):
    # Two initializers with one seed draw one stream whatever their shapes:
    # the weights' flattened starts would be equal up to scale.
    drawn = _random_weights(BUILDERS[name](7))
    for a, b in itertools.combinations(drawn, 2):
        x, y = (np.asarray(w.numpy(), np.float64).ravel() for w in (a, b))
        n = min(x.size, y.size)
        if n >= 16:
            correlation = np.corrcoef(x[:n], y[:n])[0, 1]
            assert abs(correlation) < 0.9, (a.path, b.path, correlation)
        if a.shape == b.shape:
            assert not np.array_equal(x, y), (a.path, b.path)

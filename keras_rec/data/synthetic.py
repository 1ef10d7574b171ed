"""The built-in synthetic dataset: needs no download, has real structure."""

from __future__ import annotations

import numpy as np

from keras_rec.data.interactions import Interactions


def make_synthetic(
    num_users: int = 1000,
    num_items: int = 500,
    latent_dim: int = 8,
    mean_length: int = 25,
    min_length: int = 5,
    popularity_exponent: float = 0.8,
    taste_strength: float = 2.5,
    sequential_probability: float = 0.35,
    seed: int = 0,
) -> Interactions:
    """A seeded synthetic implicit-feedback dataset (called "synthetic").

    Each user's sequence is drawn item by item without repeats:
    * **popularity**: item `i` (by rank) carries a log-prior
      `-popularity_exponent * log(rank + 1)`, a power law;
    * **tastes**: user and item latent vectors give an affinity
      `taste_strength * <u, v> / sqrt(latent_dim)`;
    * **sequential dynamics**: each item has three fixed "follow-up" items;
      with probability `sequential_probability` the next item is a follow-up
      of the previous one (when not consumed yet).

    So popularity ranks above random, a factor model above popularity, and a
    sequence model gains from order. Timestamps are the draw order.

    Args:
        num_users: int. Number of users.
        num_items: int. Number of items.
        latent_dim: int. Dimension of the latent tastes.
        mean_length: int. Mean sequence length (geometric beyond `min_length`).
        min_length: int. Shortest sequence.
        popularity_exponent: float. Power-law exponent of item popularity.
        taste_strength: float. Scale of the user-item affinity.
        sequential_probability: float. Chance of following a transition.
        seed: int. Seed of every random draw.
    """
    if num_items < 2 * min_length or min_length < 3:
        raise ValueError(
            "`num_items` must be at least twice `min_length` and `min_length` at "
            f"least 3. Received num_items={num_items}, min_length={min_length}"
        )
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(size=(num_users, latent_dim))
    item_factors = rng.normal(size=(num_items, latent_dim))
    popularity = -popularity_exponent * np.log(rng.permutation(num_items) + 1.0)
    follow_ups = rng.integers(0, num_items, size=(num_items, 3))
    lengths = min_length + rng.geometric(
        1.0 / max(1, mean_length - min_length + 1), size=num_users
    )
    lengths = np.minimum(lengths, num_items // 2)

    users, items = [], []
    for user in range(num_users):
        logits = taste_strength * item_factors @ user_factors[user]
        logits = logits / np.sqrt(latent_dim) + popularity
        # Gumbel-top-k: a draw without replacement from softmax(logits).
        order = np.argsort(-(logits + rng.gumbel(size=num_items)))
        used = np.zeros(num_items, bool)
        sequence, cursor = [], 0
        while len(sequence) < lengths[user]:
            item = -1
            if sequence and rng.random() < sequential_probability:
                candidate = follow_ups[sequence[-1], rng.integers(3)]
                if not used[candidate]:
                    item = candidate
            if item < 0:
                while used[order[cursor]]:
                    cursor += 1
                item = order[cursor]
            used[item] = True
            sequence.append(item)
        users.append(np.full(len(sequence), user))
        items.append(np.asarray(sequence))
    user_ids = np.concatenate(users)
    return Interactions(
        user_ids=user_ids,
        item_ids=np.concatenate(items),
        num_users=num_users,
        num_items=num_items,
        timestamps=np.arange(len(user_ids), dtype=np.int64),
        name="synthetic",
    )

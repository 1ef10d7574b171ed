"""Seeding a Keras initializer given by name, config or instance."""

from __future__ import annotations

import keras


def seeded_initializer(identifier, seed: int | None) -> keras.initializers.Initializer:
    """`keras.initializers.get(identifier)`, reseeded with `seed` when the
    initializer takes one (`seed=None` keeps its own seed).

    Args:
        identifier: str, config dict or initializer (anything
            `keras.initializers.get` accepts).
        seed: int or None.

    Raises:
        ValueError: `identifier` names no Keras initializer.
    """
    initializer = keras.initializers.get(identifier)
    if seed is None or not hasattr(initializer, "seed"):
        return initializer
    config = initializer.get_config()
    return type(initializer).from_config({**config, "seed": seed})


def serialize_initializer(identifier) -> str | dict:
    """A JSON-able form of `identifier` for a config: a name stays a name,
    a config dict or instance becomes `keras.initializers.serialize`'s dict.

    Raises:
        ValueError: `identifier` names no Keras initializer.
    """
    initializer = keras.initializers.get(identifier)
    if isinstance(identifier, str):
        return identifier
    return keras.initializers.serialize(initializer)

"""TensorFlow Datasets readers (for users who are online or have prepared data)."""

from __future__ import annotations

import numpy as np

from keras_rec.data.interactions import Interactions


def load_tfds_movielens(
    name: str = "movielens/1m-ratings",
    data_dir: str | None = None,
    download: bool = False,
) -> Interactions:
    """Reads a TFDS `movielens/*-ratings` split into `Interactions`.

    With `download=False` (the default) only data already prepared under
    `data_dir` is read, so nothing is fetched from the network; pass
    `download=True` when online (TFDS then needs `importlib_resources`).
    """
    import tensorflow_datasets as tfds

    if not name.startswith("movielens/") or not name.endswith("-ratings"):
        raise ValueError(
            f"Only TFDS `movielens/*-ratings` datasets are supported. Received {name!r}"
        )
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if download:
            builder.download_and_prepare()
        elif not builder.is_prepared():
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared under "
                f"{builder.data_dir!r}; call with download=True when online"
            )
        records = builder.as_dataset(split="train", batch_size=1 << 16)
    except (tfds.core.registered.DatasetNotFoundError, KeyError) as error:
        raise ValueError(f"Unknown TFDS dataset {name!r}: {error}") from None
    users, items, ratings, times = [], [], [], []
    for batch in tfds.as_numpy(records):
        users.append(batch["user_id"])
        items.append(batch["movie_id"])
        ratings.append(batch["user_rating"])
        times.append(batch["timestamp"])
    return Interactions.from_raw(
        np.concatenate(users),
        np.concatenate(items),
        timestamps=np.concatenate(times),
        ratings=np.concatenate(ratings),
        name=name,
    )

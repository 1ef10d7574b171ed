"""The `Example:` sections of the public docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import keras_rec

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(keras_rec.__path__, prefix="keras_rec.")
)


def test_every_module_is_collected():
    # A rename that empties the list would otherwise pass silently.
    assert {"keras_rec.models.ngcf", "keras_rec.losses.bpr"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        report=True,
        verbose=False,
    )
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"

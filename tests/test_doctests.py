"""The Examples in the public docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = [
    "jaxtransfer._entropy",
    "jaxtransfer._gbc",
    "jaxtransfer._hscore",
    "jaxtransfer._leep",
    "jaxtransfer._linear_mse",
    "jaxtransfer._logme",
    "jaxtransfer._nleep",
    "jaxtransfer._score_matrix",
    "jaxtransfer._transrate",
    "jaxtransfer.features",
    "jaxtransfer.zoo",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0

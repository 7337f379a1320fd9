"""The Examples in the public docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = [
    "jaxtransfer.apps._microbench",
    "jaxtransfer.estimators._entropy",
    "jaxtransfer.estimators._gbc",
    "jaxtransfer.estimators._heldout",
    "jaxtransfer.estimators._hscore",
    "jaxtransfer.estimators._leep",
    "jaxtransfer.estimators._linear_mse",
    "jaxtransfer.estimators._logme",
    "jaxtransfer.estimators._nleep",
    "jaxtransfer.estimators._score_matrix",
    "jaxtransfer.estimators._soft_nce",
    "jaxtransfer.estimators._source_stream",
    "jaxtransfer.estimators._streaming",
    "jaxtransfer.estimators._transrate",
    "jaxtransfer.features",
    "jaxtransfer.metrics",
    "jaxtransfer.models.zoo",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0

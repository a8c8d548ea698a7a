"""Every public example in a docstring runs (STYLE rule 9)."""

import doctest
import importlib
import pkgutil

import pytest

import spikeforge

MODULES = sorted(m.name for m in pkgutil.walk_packages(spikeforge.__path__, "spikeforge.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"

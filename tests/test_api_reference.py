"""The API reference's page list comes from the public modules' ``__all__``: every public name has
an entry (its own or a link to its home page), and every page's module is importable.
(``.ci/run`` builds the reference itself with warnings as errors.)"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys

import pytest

DOCS_API = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "api")
sys.path.insert(0, DOCS_API)
apipages = pytest.importorskip("apipages")

_REQUIRED = {"lip_agnostic", "lip_agnostic.metrics", "lip_agnostic.noise", "lip_agnostic.errors",
             "lip_agnostic.options", "lip_agnostic.adapters.torch", "lip_agnostic.adapters.keras",
             "lip_agnostic.adapters.sklearn", "lip_agnostic.adapters.transformers",
             "lip_agnostic.adapters.lightning"}


def test_the_reference_covers_the_public_modules():
    assert _REQUIRED <= {m for m, _ in apipages.MODULES}


def test_every_public_name_has_an_entry(tmp_path):
    # A face's page needs its framework; the others need only the core.
    modules = [(m, t) for m, t in apipages.MODULES
               if not m.startswith("lip_agnostic.adapters.") or importlib.util.find_spec(m.rsplit(".", 1)[1])]
    paths = apipages.write_pages(str(tmp_path), modules)
    assert len(paths) == len(modules)
    for (mod, _), path in zip(modules, paths):
        text = open(path, encoding="utf-8").read()
        module = importlib.import_module(mod)
        assert f".. automodule:: {mod}" in text
        for name in module.__all__:
            if isinstance(getattr(module, name), type(module)):
                continue  # a re-exported submodule has its own page
            entry = re.search(rf"(\.\. auto\w+:: {re.escape(mod)}\.{re.escape(name)}$|`{re.escape(name)} <[\w.]+\.{re.escape(name)}>`)",
                              text, re.M)
            assert entry, f"{mod}.{name} is missing from the reference"

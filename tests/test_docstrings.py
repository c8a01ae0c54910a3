"""Every public entry point of ``tvmq`` documents itself in numpydoc sections, as ``Config`` does."""

import inspect

import pytest

import tvmq

SECTIONS = ("Parameters\n", "Attributes\n")


@pytest.mark.parametrize("name", [n for n in tvmq.__all__ if n != "TvmqError"])
def test_public_names_have_numpydoc_sections(name):
    doc = inspect.getdoc(getattr(tvmq, name)) or ""
    assert doc.splitlines() and any(section in doc for section in SECTIONS), f"tvmq.{name}: no numpydoc section"

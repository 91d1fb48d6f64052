import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture
def pylayers_path(monkeypatch):
    """The folder holding pylayers.py on sys.path (as PYTHONPATH would put it)."""
    monkeypatch.syspath_prepend(str(HERE))
    return HERE

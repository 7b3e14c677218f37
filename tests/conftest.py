import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST directory from $ATTENTION_DATA.

    Skips when it is not set, unless ATTENTION_REQUIRE_DATA=1 (as in CI), where a missing data set fails.
    """
    path = os.environ.get("ATTENTION_DATA")
    if not path:
        if os.environ.get("ATTENTION_REQUIRE_DATA") == "1":
            pytest.fail("ATTENTION_DATA is not set but ATTENTION_REQUIRE_DATA=1: point it at the MNIST files")
        pytest.skip("real MNIST not available: set ATTENTION_DATA")
    return Path(path)

import os
from pathlib import Path

import pytest

# The suite runs with PyTorch's linear kernel forced (attention/linear.py): measuring both kernels at every
# new layer shape costs more than a smoke run's training, and a choice measured on a loaded machine could
# differ between two processes of one test. test_linear.py tests the rule itself with fake kernels.
os.environ.setdefault("ATTENTION_ONEDNN_LINEAR", "0")


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

import os
import tempfile

import pytest

from flaxcls.testing.launch import TEST_XLA_FLAGS

# Quiet TensorFlow's C++ logs and keep JAX on the CPU; set before JAX is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests build the same steps many times (fresh runs, resumed runs, in the test workers and in
# the `run.py` processes they launch): one JAX compilation cache for the whole session. It is
# set in the environment before the xdist workers start, so they and their children share it.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="flaxcls-test-xla-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()


@pytest.fixture
def tiny_net(monkeypatch):
    """`tests.helpers.TinyNet` registered as the model "tiny_net" for one test: whole runs with
    BatchNorm, dropout and a convolution at a fraction of a registered model's compile time."""
    from tests.helpers import register_tiny_net

    return register_tiny_net(monkeypatch)

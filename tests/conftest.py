import os
import tempfile

# Quiet TensorFlow's C++ logs and keep JAX on the CPU; set before JAX is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Tests build the same steps many times (fresh runs, resumed runs): share compilations.
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="flaxcls-test-xla-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

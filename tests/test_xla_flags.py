"""flaxcls/testing/xla_flags.py: the GPU flag sets name flags this jaxlib knows, and merge into
XLA_FLAGS without losing the caller's."""

import os
import subprocess
import sys

import pytest

from flaxcls.errors import ConfigError
from flaxcls.testing import xla_flags


def test_merged_adds_flags_and_the_new_value_wins():
    existing = "--xla_force_host_platform_device_count=8 --xla_gpu_enable_pdl=false"
    merged = xla_flags.merged(["--xla_gpu_enable_pdl=true"], existing)
    assert merged.split() == [
        "--xla_force_host_platform_device_count=8",
        "--xla_gpu_enable_pdl=true",
    ]
    assert xla_flags.merged([], existing) == existing


def test_environment_keeps_the_callers_flags_and_refuses_unknown_sets():
    env = xla_flags.environment("pdl", {"XLA_FLAGS": "--xla_dump_to=/tmp/x", "A": "1"})
    assert env == {"XLA_FLAGS": "--xla_dump_to=/tmp/x --xla_gpu_enable_pdl=true", "A": "1"}
    assert "XLA_FLAGS" not in xla_flags.environment("default", {})
    with pytest.raises(ConfigError, match="latency_hiding"):
        xla_flags.environment("fastest", {})


def test_every_flag_set_is_accepted_by_this_jaxlib():
    """XLA checks every flag name when its backend starts (GPU flags on a CPU build too) and
    aborts on one it does not know ("Unknown flag in XLA_FLAGS"): a flag renamed by a jaxlib
    upgrade fails here, not on the GPU."""
    flags = [flag for flag_set in xla_flags.GPU_FLAG_SETS.values() for flag in flag_set]
    env = {**os.environ, "XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu"}
    code = "import jax; print(jax.numpy.zeros(2).sum())"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "0.0", done.stderr[-2000:]

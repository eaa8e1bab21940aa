"""XLA flag sets for GPUs, in one place: the candidates `benchmarks/resnet50_vs_pytorch.py
--xla_flags` measures on a training step, and the helper that puts one into `XLA_FLAGS`.

XLA reads `XLA_FLAGS` once, when JAX starts its first backend, so a flag set applies to a
fresh process (set it before the first computation); an unknown flag name aborts that process,
and flag names change between XLA releases (these are jaxlib 0.10's, from XLA's
`debug_options_flags.cc`). Left out on purpose: `--xla_gpu_autotune_level`, whose default (4)
already times every cuDNN convolution and GEMM algorithm (lower levels only skip the checks or
the autotuning itself), and `--xla_gpu_deterministic_ops`, which trades speed for bitwise
reproducibility (BUILD.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from flaxcls.errors import ConfigError

GPU_FLAG_SETS: dict[str, tuple[str, ...]] = {
    "default": (),
    # Schedules the step's kernels with a cost model (off by default); on one GPU it can still
    # overlap copies and independent fusions.
    "latency_hiding": ("--xla_gpu_enable_latency_hiding_scheduler=true",),
    # GEMMs through cuBLAS instead of Triton's generated kernels (only the classifier head and
    # the weight gradients XLA turns into dots are GEMMs in a ResNet).
    "no_triton_gemm": ("--xla_gpu_enable_triton_gemm=false",),
    # cuDNN's runtime-compiled fusions of a convolution with its elementwise neighbours (off by
    # default because the first call of a fused conv can take seconds to compile).
    "cudnn_runtime_fusion": ("--xla_gpu_use_runtime_fusion=true",),
    # XLA's own convolution fusions (experimental), which replace the cuDNN rewriter passes.
    "conv_fusion": ("--xla_gpu_experimental_enable_conv_fusion=true",),
    # Programmatic dependent launch (Hopper and later): a kernel's prologue overlaps the
    # previous kernel's tail.
    "pdl": ("--xla_gpu_enable_pdl=true",),
    # Command buffers (CUDA graphs) off: every kernel launched from the host.
    "no_command_buffer": ("--xla_gpu_enable_command_buffer=",),
    # CUDA graphs around every run of kernels, however short (default: 5 or more).
    "graph_min_1": ("--xla_gpu_graph_min_graph_size=1",),
}


def flag_names(flags: Iterable[str]) -> list[str]:
    """`--name=value` -> `name`."""
    return [flag.lstrip("-").split("=", 1)[0] for flag in flags]


def merged(flags: Iterable[str], existing: str = "") -> str:
    """`existing` XLA_FLAGS with `flags` added; a flag named in both takes the new value."""
    flags = list(flags)
    replaced = set(flag_names(flags))
    kept = [f for f in existing.split() if flag_names([f])[0] not in replaced]
    return " ".join(kept + flags)


def environment(name: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` (default: this process's) whose XLA_FLAGS add the flag set `name`."""
    if name not in GPU_FLAG_SETS:
        raise ConfigError(f"unknown XLA flag set {name!r}; choose from {', '.join(GPU_FLAG_SETS)}")
    env = dict(os.environ if env is None else env)
    flags = merged(GPU_FLAG_SETS[name], env.get("XLA_FLAGS", ""))
    if flags:
        env["XLA_FLAGS"] = flags
    return env

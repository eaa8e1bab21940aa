"""Joining JAX's multi-controller runtime: one call per process, before any other JAX work.

On TPU VMs, SLURM, Open MPI and Kubernetes JAX finds the coordinator and this process's id
itself; elsewhere pass the coordinator address (host:port of process 0), the process count
and this process's id.
"""

from __future__ import annotations

import jax

from flaxcls.errors import ConfigError


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
    """Starts `jax.distributed`; after it, `jax.devices()` lists the devices of every process."""
    explicit = {
        "coordinator_address": coordinator_address or None,
        "num_processes": num_processes or None,
        "process_id": None if process_id < 0 else process_id,
    }
    given = [name for name, value in explicit.items() if value is not None]
    if given and len(given) != len(explicit):
        missing = sorted(set(explicit) - set(given))
        raise ConfigError(
            f"multi-process launch: {', '.join(given)} given but not {', '.join(missing)}; "
            "give all three, or none where the cluster provides them (TPU VM, SLURM)."
        )
    # CPU processes exchange collectives over gloo (TCP); GPUs and TPUs ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**{k: v for k, v in explicit.items() if v is not None})

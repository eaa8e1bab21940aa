"""Devices as one mesh: the batch split over a `data` axis; the train state replicated, or its
large leaves sharded over the same axis (FSDP: XLA gathers each parameter where it is used)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flaxcls.errors import ConfigError

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def block_sharding(mesh: Mesh) -> NamedSharding:
    """A block of batches stacked on a leading step axis: each batch split as `batch_sharding`."""
    return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    """A training batch is split evenly over the devices; one that is not says the nearest
    sizes that are. (Evaluation batches need no check: they are padded with masked rows.)"""
    devices = mesh.devices.size
    if batch_size % devices:
        lower = batch_size // devices * devices
        nearest = f"{lower} or {lower + devices}" if lower else f"{devices}"
        raise ConfigError(
            f"{name}={batch_size} does not divide over {devices} devices; use a multiple of "
            f"{devices}, e.g. {nearest}."
        )


def _from_process_local(
    arrays: dict[str, np.ndarray], sharding: NamedSharding
) -> dict[str, jax.Array | np.ndarray]:
    if jax.process_count() == 1:
        # One process holds the whole batch: a jitted step's `in_shardings` place numpy
        # arguments themselves, in a fraction of make_array_from_process_local_data's time.
        return arrays
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in arrays.items()}


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array | np.ndarray]:
    """This process's rows of a batch -> what a step jitted with `batch_sharding` takes: global
    arrays sharded over the data axis (with one process, the numpy arrays as they are)."""
    return _from_process_local(batch, batch_sharding(mesh))


def block_to_global(block: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array | np.ndarray]:
    """This process's rows of a [steps, batch, ...] block -> what a step jitted with
    `block_sharding` takes, as `to_global`."""
    return _from_process_local(block, block_sharding(mesh))


def _replicated_spec(shape: tuple[int, ...], devices: int, min_size: int) -> PartitionSpec:
    return PartitionSpec()


def _fsdp_spec(shape: tuple[int, ...], devices: int, min_size: int) -> PartitionSpec:
    """The largest dimension that divides over the devices is split; small leaves replicate."""
    if devices == 1 or math.prod(shape) < min_size:
        return PartitionSpec()
    divisible = [d for d in range(len(shape)) if shape[d] % devices == 0]
    if not divisible:
        return PartitionSpec()
    dim = max(divisible, key=lambda d: shape[d])
    return PartitionSpec(*(DATA_AXIS if d == dim else None for d in range(len(shape))))


PARAM_LAYOUTS: dict[str, Callable[[tuple[int, ...], int, int], PartitionSpec]] = {
    "replicated": _replicated_spec,
    "fsdp": _fsdp_spec,
}


def state_shardings(
    abstract_state: Any, mesh: Mesh, layout: str = "replicated", min_size: int = 2**16
) -> Any:
    """Shardings for every leaf of the state under `layout` (a PARAM_LAYOUTS name).

    The rule looks only at a leaf's shape, so optimiser moments shard as their parameters do.
    """
    if layout not in PARAM_LAYOUTS:
        raise ConfigError(
            f"mesh.params={layout!r}; choose one of {', '.join(sorted(PARAM_LAYOUTS))}."
        )
    rule, devices = PARAM_LAYOUTS[layout], mesh.shape[DATA_AXIS]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, rule(tuple(x.shape), devices, min_size)), abstract_state
    )

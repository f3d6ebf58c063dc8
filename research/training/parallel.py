"""Data parallelism over a `jax.sharding.Mesh` of every device, on one host or many.

Parameters and optimizer state are replicated; each batch is split along its first axis
over the mesh's 'data' axis. The same jitted step runs on 1 CPU, simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8), GPUs and TPU pods.
"""
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from research.errors import ConfigError

DATA_AXIS = 'data'


def make_mesh(devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else devices
  # Auto axes: the classic sharding propagation (Explicit would reject sharded conv kernels).
  return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh, what: str = 'batch size') -> None:
  if global_batch_size % mesh.size:
    raise ConfigError(f'{what} {global_batch_size} is not divisible by the {mesh.size} devices')


def to_global(local_batch: dict, sharding: NamedSharding) -> dict:
  """Assembles each process's share of a batch into one global array sharded over the mesh."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def must_sync_each_step(mesh) -> bool:
  """XLA's CPU collectives can hang when many sharded steps are dispatched ahead; block instead."""
  return mesh.devices.flat[0].platform == 'cpu' and mesh.size > 1

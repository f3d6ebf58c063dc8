"""Starting a run that spans several processes (hosts): `jax.distributed` before any JAX call.

A process joins a multi-process run when it is told so explicitly (flags, or the environment
variables JAX reads: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) or when it
was launched in a cluster that `jax.distributed.initialize()` recognises without arguments:
SLURM (`srun`, more than one task), Open MPI (`mpirun`, more than one rank), Cloud TPU VM pods
(GCE and GKE). Otherwise nothing happens and the run is single-process, as before.

On CPUs, processes exchange data through gloo (`jax_cpu_collectives_implementation`), so the
same multi-process run works on one machine with loopback addresses (the tests do that).
"""
import os

import jax

from research.errors import ConfigError

ENV = {'coordinator_address': 'JAX_COORDINATOR_ADDRESS', 'num_processes': 'JAX_NUM_PROCESSES',
       'process_id': 'JAX_PROCESS_ID'}


def detected_cluster() -> str:
  """The name of the multi-process launcher this process runs under, or '' (single process).

  Uses JAX's own cluster detection (the classes `jax.distributed.initialize()` consults), and
  ignores launches of a single task or rank."""
  from jax._src import clusters  # the detection jax.distributed.initialize() itself uses
  sizes = {'SlurmCluster': os.environ.get('SLURM_NTASKS', '1'),
           'OmpiCluster': os.environ.get('OMPI_COMM_WORLD_SIZE', '1')}
  for cluster in clusters.ClusterEnv._cluster_types:  # noqa: SLF001 (pinned jax version)
    name = cluster.__name__
    if name not in ('SlurmCluster', 'OmpiCluster', 'GceTpuCluster', 'GkeTpuCluster'):
      continue
    try:
      present = cluster.is_env_present()
    except Exception:  # a metadata server that does not answer means no TPU pod
      present = False
    if present and (name not in sizes or int(sizes[name] or 1) > 1):
      return {'SlurmCluster': 'SLURM', 'OmpiCluster': 'Open MPI'}.get(name, 'Cloud TPU')
  return ''


def explicit_settings(coordinator_address: str = '', num_processes: int = 0,
                      process_id: int = -1) -> dict:
  """The multi-process settings given by flags, else by the environment; {} when none are."""
  given = {'coordinator_address': coordinator_address or os.environ.get(ENV['coordinator_address'], ''),
           'num_processes': num_processes or int(os.environ.get(ENV['num_processes'], 0) or 0),
           'process_id': process_id if process_id >= 0 else int(os.environ.get(ENV['process_id'], -1))}
  named = {k for k, v in given.items()
           if (k == 'coordinator_address' and v) or (k == 'num_processes' and v > 0)
           or (k == 'process_id' and v >= 0)}
  if not named:
    return {}
  if named != set(given):
    missing = ', '.join(f'--{k} (or {ENV[k]})' for k in given if k not in named)
    raise ConfigError(f'a multi-process run needs --coordinator_address, --num_processes and '
                      f'--process_id; missing {missing}')
  if ':' not in given['coordinator_address']:
    raise ConfigError(f'--coordinator_address={given["coordinator_address"]!r} must be host:port')
  if not 0 <= given['process_id'] < given['num_processes']:
    raise ConfigError(f'--process_id={given["process_id"]} must be in [0, '
                      f'{given["num_processes"]}) for --num_processes={given["num_processes"]}')
  return given


def initialize(coordinator_address: str = '', num_processes: int = 0,
               process_id: int = -1) -> str:
  """Joins the multi-process run this process belongs to, if any; returns how ('' = none).

  Must run before any other JAX computation (it fixes the set of devices)."""
  settings = explicit_settings(coordinator_address, num_processes, process_id)
  how = 'flags' if settings else detected_cluster()
  if not how:
    return ''
  if jax.config.jax_platforms in (None, '', 'cpu') or 'cpu' in str(jax.config.jax_platforms):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(**settings)
  except Exception as e:  # connection refused, timeout, bad address: one line
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    raise ConfigError(f'could not join the multi-process run ({how}): {first}') from None
  return how

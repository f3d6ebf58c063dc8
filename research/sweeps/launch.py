"""Running a sweep's runs: as local subprocesses, or as SLURM jobs through submitit.

`local`: `parallel` runs at a time, each pinned to its own share of this machine's cores
(`os.sched_setaffinity`: XLA sizes its thread pools, and ConvLab's oneDNN kernels split their
work, by the cores a process may use), so parallel runs do not oversubscribe the machine.
`slurm`: one submitit job per run (`pip install -e ".[sweeps]"`); partition, time limit and
GPUs come from flags or the sweep's `slurm` entry, at most `parallel` jobs at a time (a job
array's parallelism). submitit's `local` cluster runs the same jobs on this machine (tests).

Every run's output goes to `<run>.log` beside its workdir. A run whose workdir holds a
summary.json is finished and skipped; any other is started (and resumes from its checkpoints).
A failing run does not stop the others: its status and error line are returned.
"""
import concurrent.futures
import dataclasses
import os
import subprocess
import time

from research.errors import ConfigError

RESUME_EXIT_CODE = 75  # research.cli's: a run stopped by a signal after saving


@dataclasses.dataclass
class Run:
  point: object          # grid.Point
  seed: int
  workdir: str
  command: list
  status: str = 'pending'  # finished | skipped | failed | interrupted
  error: str = ''
  seconds: float = 0.0

  @property
  def log(self) -> str:
    return self.workdir.rstrip('/') + '.log'


def error_line(log_text: str) -> str:
  """The run's `error:` line, else its last non-empty line."""
  lines = [l.strip() for l in log_text.splitlines() if l.strip()]
  errors = [l for l in lines if l.startswith('error: ')]
  return (errors or lines or ['(no output)'])[-1][:500]


def is_finished(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, 'summary.json'))


def core_shares(parallel: int) -> list[set[int]]:
  """This process's cores in `parallel` disjoint, near-equal groups (at least one core each)."""
  cores = sorted(os.sched_getaffinity(0))
  if parallel > len(cores):
    raise ConfigError(f'--parallel={parallel} is more than the {len(cores)} cores this process may '
                      'use; each run needs at least one')
  return [set(cores[i::parallel]) for i in range(parallel)]


def _finish(run: Run, code: int, log_text: str, started: float) -> Run:
  run.seconds = time.time() - started
  if code == 0:
    run.status = 'finished'
  elif code == RESUME_EXIT_CODE:
    run.status, run.error = 'interrupted', error_line(log_text) or 'stopped by a signal'
  else:
    run.status, run.error = 'failed', error_line(log_text)
  return run


def run_local(runs: list[Run], parallel: int = 1, env: dict | None = None,
              report=print) -> list[Run]:
  """Runs every unfinished run as a subprocess, `parallel` at a time, each on its own cores."""
  shares = core_shares(parallel)
  free = list(range(parallel))
  todo = []
  for run in runs:
    if is_finished(run.workdir):
      run.status = 'skipped'
    else:
      todo.append(run)

  def one(run: Run, share: int) -> Run:
    cores = shares[share]
    os.makedirs(os.path.dirname(run.log) or '.', exist_ok=True)
    run_env = {**os.environ, **(env or {}), 'OMP_NUM_THREADS': str(len(cores))}
    started = time.time()
    with open(run.log, 'w') as log:
      log.write('$ ' + ' '.join(run.command) + '\n')
      log.flush()
      process = subprocess.Popen(run.command, stdout=log, stderr=subprocess.STDOUT, env=run_env,
                                 preexec_fn=lambda: os.sched_setaffinity(0, cores))
      code = process.wait()
    return _finish(run, code, open(run.log).read(), started)

  with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
    pending = {}
    queue = list(todo)
    while queue or pending:
      while queue and free:
        run, share = queue.pop(0), free.pop(0)
        pending[pool.submit(one, run, share)] = share
        report(f'started {run.point.name}/seed{run.seed}')
      done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in done:
        free.append(pending.pop(future))
        run = future.result()
        report(f'{run.status} {run.point.name}/seed{run.seed} ({run.seconds:.0f} s)'
               + (f': {run.error}' if run.error else ''))
  return runs


def run_slurm(runs: list[Run], folder: str, parallel: int, settings: dict,
              cluster: str = 'slurm', report=print) -> list[Run]:
  """Submits every unfinished run as a job through submitit and waits for all of them.

  `settings`: partition, time_min, gpus_per_node, cpus_per_task, mem_gb (any may be absent)."""
  try:
    import submitit
  except ImportError:
    raise ConfigError('--executor=slurm needs submitit: pip install -e ".[sweeps]"') from None
  executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
  parameters = {'timeout_min': int(settings.get('time_min', 60)), 'name': 'convlab-sweep'}
  slurm_names = {'partition': 'slurm_partition', 'gpus_per_node': 'gpus_per_node',
                 'cpus_per_task': 'cpus_per_task', 'mem_gb': 'mem_gb'}
  for key, name in slurm_names.items():
    if settings.get(key) not in (None, '', 0):
      parameters[name] = settings[key]
  if cluster == 'slurm':
    parameters['slurm_array_parallelism'] = parallel
  executor.update_parameters(**{k: v for k, v in parameters.items()
                                if cluster == 'slurm' or not k.startswith('slurm_')})
  todo = [run for run in runs if not is_finished(run.workdir)]
  for run in runs:
    if run not in todo:
      run.status = 'skipped'
  jobs = []
  started = time.time()
  with executor.batch():
    for run in todo:
      os.makedirs(os.path.dirname(run.log) or '.', exist_ok=True)
      jobs.append(executor.submit(submitit.helpers.CommandFunction(
          run.command, cwd=os.getcwd(), env={**os.environ})))
  for run, job in zip(todo, jobs):
    report(f'submitted {run.point.name}/seed{run.seed} as job {job.job_id}')
  for run, job in zip(todo, jobs):
    try:
      job.result()
      code = 0
    except Exception as e:  # submitit raises naming the exit code and the job's log files
      code = RESUME_EXIT_CODE if f'exit code {RESUME_EXIT_CODE}' in str(e) else 1
    text = ''.join(part or '' for part in (job.stdout(), job.stderr()))
    with open(run.log, 'w') as log:
      log.write('$ ' + ' '.join(run.command) + f'\n(submitit job {job.job_id})\n' + text)
    _finish(run, code, text, started)
    report(f'{run.status} {run.point.name}/seed{run.seed}' + (f': {run.error}' if run.error else ''))
  return runs

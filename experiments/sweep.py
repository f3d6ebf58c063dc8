"""Sweeps: one command runs every point of an ablation with every seed, then writes its table.

    python -m experiments.sweep --config=configs/classification/mnist_cnn_regularization.py \
        --workdir=runs/regularization [--parallel=2] [--executor=local|slurm] [--dry_run] \
        [--config.train.num_epochs=2 ...]
    python -m experiments.sweep --collect=runs/regularization

The config file has `get_config()` (naming its experiment module in `config.experiment`) and
`get_sweep()` (research/sweeps/grid.py says what it may hold). Each point x seed runs as its
own run in `<workdir>/<point>/seed<k>/`, by the command `--dry_run` prints; the --config.*
overrides given here apply to every point. Rerunning skips finished runs and resumes the
others; a failing run does not stop the rest, and is listed at the end with its error line
(the exit code is then 1). At the end, and with --collect, the sweep's folder receives
results.md, results.csv, results.png and tensorboard/ (research/sweeps/results.py).
"""
import argparse
import importlib.util
import os
import shlex
import subprocess
import sys

from research.errors import ConfigError, ConvLabError
from research.sweeps import grid, launch, results


def load_config_module(path: str):
  if not os.path.isfile(path):
    raise ConfigError(f'config file {path} does not exist')
  spec = importlib.util.spec_from_file_location('sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise ConfigError(f'{path} has no get_sweep(): a sweep config returns its axes and seeds '
                      'from get_sweep() (see research/sweeps/grid.py)')
  return module


def first_sentence(docstring: str) -> str:
  """The first sentence of a docstring's first paragraph, on one line (the tables' title)."""
  paragraph = ' '.join(docstring.strip().split('\n\n')[0].split())
  end = paragraph.find('. ')
  return paragraph if end < 0 else paragraph[:end + 1]


def check_override_keys(config, extra: list[str]) -> None:
  """Each `--config.a.b=v` names a key of the config (free-form sections excepted): typos are
  caught without running anything (the real launch also dry-runs its first run)."""
  from research.config import nested, unknown_key_message
  keys = [override.split('=', 1)[0][len('--config.'):] for override in extra]
  message = unknown_key_message(nested(keys), config)
  if message:
    raise ConfigError(message)


def plan(config_path: str, sweep_dir: str, extra: list[str],
         seeds: list[int] | None = None) -> tuple[list, dict]:
  """The runs of a sweep and its manifest (what sweep.json records); `seeds`, if given,
  replaces get_sweep()'s."""
  module = load_config_module(config_path)
  spec = module.get_sweep()
  points, spec_seeds = grid.expand(spec)
  seeds = spec_seeds if seeds is None else seeds
  if any(override.split('=', 1)[0] == '--config.seed' for override in extra):
    raise ConfigError(f"the sweep gives each run its seed (get_sweep()'s seeds: {spec_seeds}); "
                      'a --config.seed override would be ignored: give --seeds=2 or --seeds=0,1 '
                      'instead')
  experiment = module.get_config().get('experiment', 'classification')
  check_override_keys(module.get_config(), extra)
  runs = [launch.Run(point, seed, grid.run_dir(sweep_dir, point, seed),
                     grid.command(experiment, config_path, grid.run_dir(sweep_dir, point, seed),
                                  point, seed, extra, python=sys.executable))
          for point in points for seed in seeds]
  manifest = {'experiment': experiment, 'config': config_path, 'overrides': extra,
              'points': [{'name': p.name, 'overrides': p.overrides} for p in points],
              'seeds': seeds, 'metrics': spec.get('metrics', []), 'plot': spec.get('plot', {}),
              'title': first_sentence(module.__doc__ or '')}
  return runs, manifest


def check_first(run) -> None:
  """Runs the first point with --dry_run: a mistake in the config or the overrides is one
  line before anything starts."""
  result = subprocess.run([*run.command, '--dry_run'], capture_output=True, text=True)
  if result.returncode:
    line = launch.error_line(result.stderr + result.stdout).removeprefix('error: ')
    raise ConfigError(f'the first run would fail: {line}')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', help='config file with get_config() and get_sweep()')
  parser.add_argument('--workdir', help="the sweep's folder")
  parser.add_argument('--parallel', type=int, default=1, help='runs at a time (local: each on '
                      'its share of the cores; slurm: jobs at a time)')
  parser.add_argument('--executor', choices=('local', 'slurm'), default='local')
  parser.add_argument('--dry_run', action='store_true', help='print the points and commands only')
  parser.add_argument('--seeds', default='', help="comma-separated seeds in place of the "
                      "config's get_sweep()['seeds'], e.g. 1,2")
  parser.add_argument('--collect', help='only (re)write the tables of this sweep folder')
  parser.add_argument('--slurm_partition', default='')
  parser.add_argument('--slurm_time_min', type=int, default=0)
  parser.add_argument('--slurm_gpus_per_node', type=int, default=0)
  parser.add_argument('--slurm_cpus_per_task', type=int, default=0)
  parser.add_argument('--slurm_mem_gb', type=int, default=0)
  parser.add_argument('--submitit_cluster', default='slurm', help="'local' runs the jobs here")
  parser.error = lambda message: (_ for _ in ()).throw(ConfigError(message))  # one line
  try:
    args, rest = parser.parse_known_args(argv)
  except ConfigError as e:
    print(f'error: {e} (see --help)', file=sys.stderr)
    return 1
  extra = [a for a in rest if a.startswith('--config.')]
  unknown = [a for a in rest if not a.startswith('--config.')]
  try:
    if unknown:
      raise ConfigError(f'unexpected arguments: {" ".join(unknown)}')
    if args.collect:
      print(results.report(args.collect))
      return 0
    if not args.config or not args.workdir:
      raise ConfigError('both --config=<sweep config> and --workdir=<dir> are required')
    if args.parallel < 1:
      raise ConfigError(f'--parallel must be at least 1, got {args.parallel}')
    try:
      seeds = [int(s) for s in args.seeds.split(',')] if args.seeds else None
    except ValueError:
      raise ConfigError(f'--seeds={args.seeds}: give comma-separated integers, e.g. 0,1') from None
    runs, manifest = plan(args.config, args.workdir, extra, seeds)
    if args.executor == 'local':
      launch.core_shares(args.parallel)  # more runs at a time than cores: refused now
    if args.dry_run:
      for run in runs:
        print(f'{run.point.name}/seed{run.seed}: {shlex.join(run.command)}')
      print(f'dry run: {len(manifest["points"])} points x {len(manifest["seeds"])} seeds = '
            f'{len(runs)} runs; nothing was written')
      return 0
    check_first(runs[0])
    results.write_manifest(args.workdir, manifest)
    if args.executor == 'local':
      launch.run_local(runs, args.parallel)
    else:
      settings = {**load_config_module(args.config).get_sweep().get('slurm', {}),
                  **{k: v for k, v in (('partition', args.slurm_partition),
                                       ('time_min', args.slurm_time_min),
                                       ('gpus_per_node', args.slurm_gpus_per_node),
                                       ('cpus_per_task', args.slurm_cpus_per_task),
                                       ('mem_gb', args.slurm_mem_gb)) if v}}
      launch.run_slurm(runs, os.path.join(args.workdir, 'slurm'), args.parallel, settings,
                       args.submitit_cluster)
    print(results.report(args.workdir))
  except ConvLabError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  bad = [r for r in runs if r.status in ('failed', 'interrupted')]
  for run in bad:
    print(f'{run.status}: {run.point.name}/seed{run.seed}: {run.error} (log: {run.log})',
          file=sys.stderr)
  print(f'{sum(r.status == "finished" for r in runs)} runs finished, '
        f'{sum(r.status == "skipped" for r in runs)} skipped (finished before), {len(bad)} failed; '
        f'tables in {args.workdir}/results.md')
  return 1 if bad else 0


if __name__ == '__main__':
  sys.exit(main())

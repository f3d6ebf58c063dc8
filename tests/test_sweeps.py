"""Sweeps: grid expansion and names, commands, the executors (local and submitit's local
cluster) with skip/resume/failure, the aggregation and its tables, and a real small sweep."""
import csv
import json
import os
import statistics
import subprocess
import sys

import numpy as np
import pytest

from research.errors import ConfigError
from research.sweeps import grid, launch, results
from tests.helpers import REPO


def test_product_zip_and_explicit_points():
  points, seeds = grid.expand({
      'points': {'base': {}, 'flip': {'data.train_ops': 'flip_lr|normalize'}},
      'product': {'model.dropout_rate': [0.0, 0.5], 'train.label_smoothing': [0.0, 0.1]},
      'zip': {'optimizer.learning_rate': [1e-3, 3e-3], 'schedule.warmup_steps': [0, 100]},
      'seeds': [0, 1, 2]})
  assert seeds == [0, 1, 2] and len(points) == 2 * 4 * 2
  names = [p.name for p in points]
  assert len(set(names)) == len(names)
  assert names[0] == ('base,dropout_rate=0.0,label_smoothing=0.0,learning_rate=0.001,'
                      'warmup_steps=0')
  flip = [p for p in points if p.name.startswith('flip,dropout_rate=0.5,label_smoothing=0.1,'
                                                 'learning_rate=0.003')]
  assert len(flip) == 1 and flip[0].overrides == {
      'data.train_ops': 'flip_lr|normalize', 'model.dropout_rate': 0.5,
      'train.label_smoothing': 0.1, 'optimizer.learning_rate': 3e-3, 'schedule.warmup_steps': 100}
  # zip pairs values row by row: never learning rate 1e-3 with 100 warmup steps
  assert not [p for p in points if p.overrides['optimizer.learning_rate'] == 1e-3
              and p.overrides['schedule.warmup_steps'] == 100]


def test_names_use_full_keys_where_last_components_collide_and_stay_folder_safe():
  points, _ = grid.expand({'product': {'model.name': ['lenet5'], 'teacher.name': ['a/b'],
                                       'model.features': [(32, 64)]}})
  assert points[0].name == 'model.name=lenet5,teacher.name=a_b,features=(32_64)'
  assert '/' not in points[0].name and ' ' not in points[0].name
  assert grid.expand({})[0][0].name == 'default'


@pytest.mark.parametrize('spec,message', [
    ({'product': {'seed': [0, 1]}}, "cannot sweep 'seed'"),
    ({'zip': {'a.b': [1, 2], 'a.c': [1]}}, 'lists of one length'),
    ({'product': {'a.b': []}}, 'non-empty list'),
    ({'seeds': [0, 0]}, 'distinct integers'),
    ({'grid': {}}, 'unknown entries grid'),
    ({'points': {'x': {}}, 'product': {'a.b': [1]}, 'zip': {'a.b': [2]}}, 'both a product and a zip'),
])
def test_malformed_sweeps_are_one_line_errors(spec, message):
  with pytest.raises(ConfigError, match=message):
    grid.expand(spec)


def test_commands_apply_user_overrides_to_every_point_and_refuse_clashes():
  point = grid.Point('p', {'model.features': (32, 64), 'train.label_smoothing': 0.1})
  cmd = grid.command('classification', 'configs/x.py', 'runs/s/p/seed3', point, 3,
                     ['--config.train.num_steps=10'])
  assert cmd[1:] == ['-m', 'experiments.classification', '--config=configs/x.py',
                     '--workdir=runs/s/p/seed3', '--config.train.num_steps=10',
                     '--config.model.features=(32, 64)', '--config.train.label_smoothing=0.1',
                     '--config.seed=3']
  with pytest.raises(ConfigError, match='--config.train.label_smoothing is swept'):
    grid.command('classification', 'x.py', 'w', point, 0, ['--config.train.label_smoothing=0.2'])


def fake_sweep(tmp_path, values):
  """A sweep folder with summary.json files: values[point][seed] = test/accuracy (None: missing)."""
  sweep = tmp_path / 'sweep'
  points = [{'name': f'lr={lr}', 'overrides': {'optimizer.learning_rate': lr}} for lr in values]
  results.write_manifest(str(sweep), {'experiment': 'classification', 'config': 'x.py',
                                      'points': points, 'seeds': [0, 1, 2], 'metrics': [],
                                      'plot': {}})
  for lr, per_seed in values.items():
    for seed, accuracy in enumerate(per_seed):
      if accuracy is None:
        continue
      run = sweep / f'lr={lr}' / f'seed{seed}'
      run.mkdir(parents=True)
      (run / 'summary.json').write_text(json.dumps({'test/accuracy': accuracy, 'test/loss': 1 - accuracy,
                                                    'train/loss': 0.5, 'step': 10}))
  return str(sweep)


def test_aggregation_tables_plot_and_hparams(tmp_path):
  values = {0.1: [0.90, 0.92, 0.97], 0.01: [0.80, None, 0.84]}
  sweep = fake_sweep(tmp_path, values)
  table = results.report(sweep)
  # Means and sample standard deviations computed independently.
  for lr, per_seed in values.items():
    seen = [v for v in per_seed if v is not None]
    cell = (f'{statistics.mean(seen):.4f} ± {statistics.stdev(seen):.4f} (n={len(seen)})')
    assert f'| lr={lr} | {lr} | {cell} |' in table
  assert 'Not finished (not in the table): lr=0.01/seed1.' in table
  rows = list(csv.DictReader(open(os.path.join(sweep, 'results.csv'))))
  assert [r['point'] for r in rows] == ['lr=0.1', 'lr=0.01']
  assert float(rows[0]['test/accuracy mean']) == pytest.approx(np.mean([0.90, 0.92, 0.97]))
  assert float(rows[1]['test/accuracy std']) == pytest.approx(np.std([0.80, 0.84], ddof=1))
  assert rows[1]['test/accuracy n'] == '2' and rows[1]['test/accuracy seed1'] == ''
  assert float(rows[0]['test/accuracy seed2']) == 0.97
  assert 'train/loss' not in table  # default metrics: the test/* keys
  assert os.path.getsize(os.path.join(sweep, 'results.png')) > 1000
  events = [f for _, _, fs in os.walk(os.path.join(sweep, 'tensorboard')) for f in fs]
  assert len([f for f in events if 'tfevents' in f]) >= 5  # one per finished run, plus the root
  assert results.mean_std([1.0]) [2] == 1 and np.isnan(results.mean_std([1.0])[1])


def script_run(tmp_path, name, code):
  """A Run whose command is a small Python script (no training): writes summary or fails."""
  workdir = tmp_path / name / 'seed0'
  command = [sys.executable, '-c', code.replace('WORKDIR', str(workdir))]
  return launch.Run(grid.Point(name, {}), 0, str(workdir), command)


WRITES = ('import json, os; os.makedirs("WORKDIR", exist_ok=True); '
          'json.dump({"test/accuracy": 0.5}, open("WORKDIR/summary.json", "w"))')
FAILS = 'import sys; print("step 3 ..."); print("error: a config key is wrong", file=sys.stderr); sys.exit(1)'
STOPPED = 'import sys; sys.exit(75)'


def test_local_executor_skips_finished_runs_and_reports_failures_without_stopping(tmp_path):
  runs = [script_run(tmp_path, 'ok', WRITES), script_run(tmp_path, 'bad', FAILS),
          script_run(tmp_path, 'stopped', STOPPED), script_run(tmp_path, 'later', WRITES)]
  launch.run_local(runs, parallel=2, report=lambda line: None)
  assert [r.status for r in runs] == ['finished', 'failed', 'interrupted', 'finished']
  assert runs[1].error == 'error: a config key is wrong'
  assert open(runs[1].log).read().startswith('$ ')
  again = [script_run(tmp_path, 'ok', FAILS)]  # finished before: never started again
  launch.run_local(again, report=lambda line: None)
  assert again[0].status == 'skipped'
  with pytest.raises(ConfigError, match='more than the'):
    launch.core_shares(len(os.sched_getaffinity(0)) + 1)
  shares = launch.core_shares(len(os.sched_getaffinity(0)))
  assert set().union(*shares) == os.sched_getaffinity(0) and all(len(s) == 1 for s in shares)


def test_slurm_executor_through_submitits_local_cluster(tmp_path):
  pytest.importorskip('submitit')
  runs = [script_run(tmp_path, 'ok', WRITES), script_run(tmp_path, 'bad', FAILS)]
  launch.run_slurm(runs, str(tmp_path / 'slurm'), parallel=2, settings={'time_min': 5},
                   cluster='local', report=lambda line: None)
  assert [r.status for r in runs] == ['finished', 'failed']
  assert 'a config key is wrong' in runs[1].error
  assert os.path.exists(os.path.join(runs[0].workdir, 'summary.json'))


@pytest.mark.real_data
def test_a_real_sweep_runs_resumes_and_reports(mnist_data_dir, tmp_path):
  config = tmp_path / 'tiny.py'
  config.write_text(
      'from configs.classification import mnist_lenet5\n'
      'def get_config():\n'
      '  c = mnist_lenet5.get_config()\n'
      '  c.data.train_split, c.data.eval_splits.test = "train[:2000]", "test[:500]"\n'
      '  c.train.num_steps, c.train.batch_size, c.schedule.warmup_steps = 8, 32, 2\n'
      '  return c\n'
      'def get_sweep():\n'
      '  return {"product": {"model.pooling": ["max", "avg", "median"]}, "seeds": [0]}\n')
  command = [sys.executable, '-m', 'experiments.sweep', f'--config={config}',
             f'--workdir={tmp_path / "sweep"}', '--parallel=2',
             f'--config.data.data_dir={mnist_data_dir}']
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  # 'median' is no pooling LeNet-5 knows: that run fails, the others finish, exit code 1.
  assert first.returncode == 1, first.stderr[-2000:]
  assert 'failed: pooling=median/seed0:' in first.stderr
  assert '2 runs finished, 0 skipped (finished before), 1 failed' in first.stdout
  table = open(tmp_path / 'sweep' / 'results.md').read()
  assert '| pooling=max | max | ' in table and '(n=1)' in table
  assert 'Not finished (not in the table): pooling=median/seed0' in table
  os.remove(tmp_path / 'sweep' / 'pooling=avg' / 'seed0' / 'summary.json')
  second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert '1 runs finished, 1 skipped (finished before), 1 failed' in second.stdout
  log = open(tmp_path / 'sweep' / 'pooling=avg' / 'seed0.log').read()
  assert 'resumed from' in log  # its checkpoints were there: resumed, not retrained
  collected = subprocess.run([sys.executable, '-m', 'experiments.sweep',
                              f'--collect={tmp_path / "sweep"}'], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
  assert collected.returncode == 0 and '| pooling=avg | avg |' in collected.stdout


def test_extra_points_are_added_as_they_are():
  points, _ = grid.expand({'product': {'d.temperature': [1.0, 4.0]},
                           'extra_points': {'scratch': {'d.teachers': ()}}})
  assert [p.name for p in points] == ['temperature=1.0', 'temperature=4.0', 'scratch']
  assert points[-1].overrides == {'d.teachers': ()}


def test_a_point_that_leaves_an_axis_alone_shows_the_value_its_run_used(tmp_path):
  sweep = str(tmp_path / 's')
  results.write_manifest(sweep, {'points': [{'name': 'T=2', 'overrides': {'kd.temperature': 2.0}},
                                            {'name': 'scratch', 'overrides': {'kd.teachers': ()}}],
                                 'seeds': [0], 'metrics': ['test/accuracy']})
  for name, temperature in (('T=2', 2.0), ('scratch', 4.0)):
    os.makedirs(os.path.join(sweep, name, 'seed0'))
    json.dump({'kd': {'temperature': temperature, 'teachers': ['runs/t']}},
              open(os.path.join(sweep, name, 'seed0', 'config.json'), 'w'))
    json.dump({'test/accuracy': 0.5}, open(os.path.join(sweep, name, 'seed0', 'summary.json'), 'w'))
  table = results.report(sweep)
  assert '| T=2 | 2.0 | (runs/t,) | 0.5000 (n=1) |' in table
  assert '| scratch | 4.0 | () | 0.5000 (n=1) |' in table  # from its config.json, and its own ()


def test_the_tables_title_is_the_configs_first_sentence():
  from experiments.sweep import first_sentence
  assert first_sentence('A sweep of\n  things. More here.\n\nNext.') == 'A sweep of things.'
  assert first_sentence('No full stop\n\nNext. x') == 'No full stop'


def test_sweep_mistakes_are_one_line_and_write_nothing(tmp_path, capsys):
  from experiments import sweep
  config = 'configs/adversarial/mnist_ablation.py'
  target = tmp_path / 's'
  cases = [
      (['--dry_run', '--config.adversarial.epss=0.1'], "unknown config key 'adversarial.epss' (did you mean 'eps'?)"),
      (['--parallel=64'], '--parallel=64 is more than the'),
      (['--dry_run', '--parallel=64'], '--parallel=64 is more than the'),
      (['--parallel=two'], "argument --parallel: invalid int value: 'two'"),
      (['--dry_run', '--config.seed=2'], "the sweep gives each run its seed (get_sweep()'s seeds: "
                                         '[0]); a --config.seed override would be ignored: '
                                         'give --seeds=2'),
      (['--dry_run', '--seeds=1,x'], '--seeds=1,x: give comma-separated integers'),
  ]
  for extra, message in cases:
    assert sweep.main([f'--config={config}', f'--workdir={target}', *extra]) == 1
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith('error: ')]
    assert len(errors) == 1 and message in errors[0], errors
    assert not target.exists()  # not even sweep.json
  # --seeds replaces the config's seeds
  assert sweep.main([f'--config={config}', f'--workdir={target}', '--dry_run', '--seeds=2,5']) == 0
  printed = capsys.readouterr().out
  assert '/seed2: ' in printed and '/seed5: ' in printed and '/seed0: ' not in printed
  assert '--config.seed=5' in printed and 'x 2 seeds' in printed
  os.makedirs(tmp_path / 'broken')
  (tmp_path / 'broken' / 'sweep.json').write_text('{not json')
  assert sweep.main([f'--collect={tmp_path / "broken"}']) == 1
  assert 'sweep.json cannot be read (JSONDecodeError' in capsys.readouterr().err

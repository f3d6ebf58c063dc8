"""Runs that span processes and survive being stopped (loopback addresses, simulated devices):
2 processes x 4 devices against 1 x 8, SIGTERM/SIGINT saves and exact resume, SIGKILL and
rerun, the workdir lock, and checkpoints loaded on another device layout."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import portpicker
import pytest

from research.training import checkpointing, transfer
from tests.helpers import REPO, assert_trees_identical

pytestmark = pytest.mark.real_data
RESUME = 75  # research.cli.RESUME_EXIT_CODE


def args_for(workdir, data_dir, steps=100):
  return ['--config=configs/classification/mnist_lenet5.py', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', '--config.data.train_split=train[:6400]',
          '--config.data.eval_splits.test=test[:1000]', '--config.train.batch_size=64',
          '--config.train.eval_batch_size=200', f'--config.train.num_steps={steps}',
          '--config.train.log_every=1', '--config.train.checkpoint_every=20',
          '--config.train.eval_every=50', '--config.schedule.warmup_steps=20']


def start(workdir, data_dir, processes=1, devices=8, steps=100):
  """Starts the run's processes; returns the Popen objects (stdout/stderr in workdir.log<i>)."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}
  port = portpicker.pick_unused_port()
  procs = []
  for i in range(processes):
    extra = ([f'--coordinator_address=localhost:{port}', f'--num_processes={processes}',
              f'--process_id={i}'] if processes > 1 else [])
    log = open(f'{workdir}.log{i}', 'w')
    procs.append(subprocess.Popen(
        [sys.executable, '-m', 'experiments.classification', *args_for(workdir, data_dir, steps),
         *extra], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
  return procs


def finish(procs, timeout=300):
  return [p.wait(timeout=timeout) for p in procs]


def logged_steps(workdir) -> list[int]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  steps = []
  for line in open(path):
    try:
      steps.append(json.loads(line)['step'])
    except (json.JSONDecodeError, KeyError):
      pass
  return steps


def saved_steps(workdir) -> list[int]:
  path = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def wait_for_step(workdir, step, procs, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if any(p.poll() is not None for p in procs):
      raise AssertionError(f'a process ended early: {open(workdir + ".log0").read()[-2000:]}')
    steps = logged_steps(workdir)
    if steps and max(steps) >= step:
      return max(steps)
    time.sleep(0.05)
  raise AssertionError(f'no step {step} within {timeout} s')


@pytest.fixture(scope='module')
def references(mnist_data_dir, tmp_path_factory):
  """Uninterrupted runs: 2 processes x 4 devices, and 1 process x 8 devices."""
  root = tmp_path_factory.mktemp('references')
  runs = {'2x4': str(root / 'two_by_four'), '1x8': str(root / 'one_by_eight')}
  for name, (processes, devices) in (('2x4', (2, 4)), ('1x8', (1, 8))):
    codes = finish(start(runs[name], mnist_data_dir, processes, devices))
    assert codes == [0] * processes, open(runs[name] + '.log0').read()[-3000:]
  return runs


def test_two_processes_train_what_one_process_of_eight_devices_trains(references):
  two, one = (json.load(open(os.path.join(references[k], 'summary.json'))) for k in ('2x4', '1x8'))
  assert two['processes'] == 2 and one['processes'] == 1
  assert two['devices'].startswith('8 x') and one['devices'].startswith('8 x')
  assert two['test/accuracy'] == pytest.approx(one['test/accuracy'], abs=1e-3)
  assert two['test/loss'] == pytest.approx(one['test/loss'], rel=1e-5)
  a, b = (checkpointing.load_state(references[k]) for k in ('2x4', '1x8'))
  for x, y in zip(jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])):
    np.testing.assert_allclose(x, y, atol=2e-5)


@pytest.mark.parametrize('processes,sig', [  # one process, SIGTERM: as 2 processes (make test-all)
    (2, signal.SIGTERM), pytest.param(1, signal.SIGTERM, marks=pytest.mark.slow),
    (1, signal.SIGINT)])
def test_a_signal_saves_at_once_and_the_rerun_resumes_exactly(references, mnist_data_dir,
                                                              tmp_path, processes, sig):
  workdir = str(tmp_path / 'run')
  procs = start(workdir, mnist_data_dir, processes, 8 // processes)
  at_signal = wait_for_step(workdir, 30, procs)
  procs[-1].send_signal(sig)  # one process only: the others learn of it at the next step
  assert finish(procs) == [RESUME] * processes, open(workdir + '.log0').read()[-2000:]
  saved = saved_steps(workdir)
  assert saved and max(saved) >= at_signal and max(saved) % 20, saved  # saved off the schedule
  assert finish(start(workdir, mnist_data_dir, processes, 8 // processes)) == [0] * processes
  assert f'resumed from' in open(workdir + '.log0').read()
  reference = references['2x4' if processes == 2 else '1x8']
  assert_trees_identical(checkpointing.load_state(workdir), checkpointing.load_state(reference))


def test_a_second_sigint_stops_at_once(mnist_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  procs = start(workdir, mnist_data_dir, 1, 1, steps=100_000)
  wait_for_step(workdir, 5, procs)
  procs[0].send_signal(signal.SIGINT)
  procs[0].send_signal(signal.SIGINT)
  code = finish(procs)[0]
  output = open(workdir + '.log0').read()
  assert code in (130, RESUME), output[-2000:]  # the first may already have saved and left
  assert 'Traceback' not in output


def test_a_busy_workdir_is_refused_and_a_killed_runs_lock_is_not(mnist_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  first = start(workdir, mnist_data_dir, 1, 1, steps=100_000)
  wait_for_step(workdir, 3, first)
  config = open(os.path.join(workdir, 'config.json')).read()
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  second = subprocess.run([sys.executable, '-m', 'experiments.classification',
                           *args_for(workdir, mnist_data_dir), '--config.optimizer.learning_rate=1'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert second.returncode == 1 and 'Traceback' not in second.stderr
  assert f'workdir {workdir} is in use by pid {first[0].pid} on ' in second.stderr
  assert first[0].poll() is None and open(os.path.join(workdir, 'config.json')).read() == config
  first[0].send_signal(signal.SIGKILL)
  first[0].wait()
  rerun = subprocess.run([sys.executable, '-m', 'experiments.classification',
                          *args_for(workdir, mnist_data_dir, steps=30)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  # The killed run left its lock file, but no lock: the rerun starts, and then refuses only
  # because its config (30 steps) differs from the checkpoint's (100,000).
  assert 'in use by' not in rerun.stderr and 'differs at train.num_steps' in rerun.stderr


def test_an_eight_device_checkpoint_loads_on_one_device(references, mnist_data_dir):
  from research.tools import visualize
  assert jax.device_count() == 1
  state = checkpointing.load_state(references['1x8'])
  loaded = transfer.load_weights(references['1x8'])
  assert_trees_identical(loaded['params'], state['params'])
  assert all(os.path.exists(p) for p in visualize.visualize(references['1x8']))


@pytest.mark.slow
def test_two_process_run_killed_five_times_resumes_to_the_same_parameters(references,
                                                                         mnist_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  rng = random.Random(0)
  for attempt in range(5):
    procs = start(workdir, mnist_data_dir, 2, 4)
    before = max(saved_steps(workdir) or [0])
    wait_for_step(workdir, min(before + rng.randint(5, 30), 95), procs)
    time.sleep(rng.uniform(0, 1.5))
    for p in procs:
      p.send_signal(signal.SIGKILL)
    finish(procs)
  assert finish(start(workdir, mnist_data_dir, 2, 4)) == [0, 0], open(workdir + '.log0').read()[-2000:]
  assert_trees_identical(checkpointing.load_state(workdir), checkpointing.load_state(references['2x4']))

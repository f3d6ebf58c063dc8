"""A run killed with SIGKILL and rerun on its workdir ends bit-identical to an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import pytest

from research.training import checkpointing
from tests.helpers import REPO, assert_trees_identical

pytestmark = pytest.mark.real_data


def command(workdir, data_dir):
  return [sys.executable, '-m', 'experiments.classification',
          '--config=configs/classification/mnist_cnn.py', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', '--config.data.train_split=train[:10000]',
          '--config.data.eval_splits.test=test[:500]', '--config.train.batch_size=32',
          '--config.train.eval_batch_size=250', '--config.train.num_steps=300',
          '--config.train.checkpoint_every=50', '--config.train.eval_every=150',
          '--config.train.log_every=50', '--config.schedule.warmup_steps=20']


def saved_steps(workdir):
  path = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def test_sigkill_then_rerun_is_bit_identical(mnist_data_dir, tmp_path):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  straight, killed = str(tmp_path / 'straight'), str(tmp_path / 'killed')
  subprocess.run(command(straight, mnist_data_dir), cwd=REPO, env=env, check=True,
                 capture_output=True, timeout=600)

  process = subprocess.Popen(command(killed, mnist_data_dir), cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not [s for s in saved_steps(killed) if s >= 100] and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
  at_kill = saved_steps(killed)
  assert at_kill and max(at_kill) < 300, at_kill

  rerun = subprocess.run(command(killed, mnist_data_dir), cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert f'at step {max(at_kill)}' in rerun.stdout
  a, b = checkpointing.load_state(straight), checkpointing.load_state(killed)
  assert int(a['step']) == int(b['step']) == 300
  assert_trees_identical(a, b)

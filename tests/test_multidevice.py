"""Data parallelism: 8 simulated CPU devices compute what 1 device does, and the loop never hangs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO


def env_with_devices(n):
  return {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO,
          'XLA_FLAGS': f'--xla_force_host_platform_device_count={n}'}


def test_two_train_steps_match_on_1_and_8_devices(tmp_path):
  results = {}
  for n in (1, 8):
    out = tmp_path / f'{n}.npz'
    subprocess.run([sys.executable, 'tests/multidevice_steps.py', str(out)], cwd=REPO,
                   env=env_with_devices(n), check=True, capture_output=True, timeout=300)
    results[n] = dict(np.load(out))
  assert int(results[1].pop('devices')) == 1 and int(results[8].pop('devices')) == 8
  assert results[1].keys() == results[8].keys() and len(results[1]) == 12
  for key in results[1]:  # BatchNorm statistics over the global batch: the same on 8 devices
    np.testing.assert_allclose(results[8][key], results[1][key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.real_data
def test_a_few_hundred_steps_on_8_cpu_devices_finish(mnist_data_dir, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.classification',
       '--config=configs/classification/mnist_lenet5.py', f'--workdir={tmp_path}',
       f'--config.data.data_dir={mnist_data_dir}', '--config.data.eval_splits.test=test[:1000]',
       '--config.train.batch_size=64', '--config.train.eval_batch_size=200',
       '--config.train.num_steps=300', '--config.train.eval_every=150',
       '--config.train.checkpoint_every=150', '--config.schedule.warmup_steps=20'],
      cwd=REPO, env=env_with_devices(8), capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.load(open(tmp_path / 'summary.json'))
  assert summary['devices'].startswith('8 x') and summary['step'] == 300
  assert summary['convolutions'] == 'XLA (8 CPU devices)'  # oneDNN runs on one device only
  assert summary['test/accuracy'] > 0.9

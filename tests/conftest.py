import os

import pytest

# Tests see one CPU device unless a test starts a subprocess with more.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def mnist_data_dir():
  """A tfds data dir holding real MNIST, prepared from $TFDS_MANUAL_DIR if it is not there yet."""
  from research.data import prepare, sources
  from research.errors import DatasetNotFoundError
  data_dir = sources.data_dir_from()
  try:
    sources.open_source('mnist', 'test', data_dir)
  except DatasetNotFoundError:
    manual = os.environ.get('TFDS_MANUAL_DIR') or os.path.join(REPO, '..', 'shared', 'datasets')
    if not os.path.isdir(os.path.join(manual, 'mnist')):
      pytest.fail('real MNIST is needed: set TFDS_MANUAL_DIR to a folder holding mnist/ '
                  '(e.g. ../shared/datasets) or prepare it: python -m research.data.prepare mnist')
    prepare.prepare('mnist', data_dir, manual)
  return data_dir

import os

import pytest

# Tests see one CPU device unless a test starts a subprocess with more.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
  from research import runtime
  runtime.enable_compilation_cache()  # the same steps compile once across tests and processes


def prepared(name: str) -> str:
  """A tfds data dir holding real `name`, prepared from the manual files if it is not there yet."""
  from research.data import prepare, sources
  from research.errors import DatasetNotFoundError
  data_dir = sources.default_data_dir()
  try:
    sources.open_source(name, 'test' if name != 'isbi2012_em' else 'train', data_dir)
  except DatasetNotFoundError:
    manual = sources.default_manual_dir()
    source = name.split(':')[0]
    if not manual or not os.path.isdir(os.path.join(manual, 'mnist' if source.startswith('mnist') else source)):
      pytest.fail(f'real {name} is needed: set TFDS_MANUAL_DIR to a folder holding its original '
                  f'files (e.g. ../shared/datasets) or prepare it: python -m research.data.prepare {name}')
    prepare.prepare(name, data_dir, manual)
  return data_dir


@pytest.fixture(scope='session')
def mnist_data_dir():
  """A tfds data dir holding real MNIST."""
  return prepared('mnist')

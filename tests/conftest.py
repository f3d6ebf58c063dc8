import os

import pytest

# Tests see one CPU device unless a test starts a subprocess with more.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
  from research import runtime
  runtime.enable_compilation_cache()  # the same steps compile once across tests and processes


def prepared(name: str) -> str:
  """A tfds data dir holding real `name`, prepared from the manual files if it is not there yet
  (under a file lock: pytest-xdist's workers may ask for the same dataset at once)."""
  import fcntl
  from research.data import sources
  data_dir = sources.default_data_dir()
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f'.{name.replace(":", "_")}.prepare.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    _prepare_unless_there(name, data_dir)
  return data_dir


def _prepare_unless_there(name: str, data_dir: str) -> None:
  from research.data import prepare, sources
  from research.errors import DatasetNotFoundError
  try:
    sources.open_source(name, 'test' if name != 'isbi2012_em' else 'train', data_dir)
  except DatasetNotFoundError:
    manual = sources.default_manual_dir()
    source = name.split(':')[0]
    if not manual or not os.path.isdir(os.path.join(manual, 'mnist' if source.startswith('mnist') else source)):
      pytest.fail(f'real {name} is needed: set TFDS_MANUAL_DIR to a folder holding its original '
                  f'files (e.g. ../shared/datasets) or prepare it: python -m research.data.prepare {name}')
    prepare.prepare(name, data_dir, manual)


@pytest.fixture(scope='session')
def mnist_data_dir():
  """A tfds data dir holding real MNIST."""
  return prepared('mnist')

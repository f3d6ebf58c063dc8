"""Opening prepared tfds splits: where datasets live, random-access sources, splits in memory.

One place decides the folders (`default_data_dir`, `default_manual_dir`): the experiments,
`python -m research.data.prepare` and the Makefile all use them, so a dataset is prepared
and read in the same data dir whichever way it was started.
"""
import dataclasses
import difflib
import os

import numpy as np

from research.errors import DatasetNotFoundError

# The checkout this package runs from, when it runs from one (an editable install).
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _in_checkout() -> bool:
  return os.path.isfile(os.path.join(_CHECKOUT, 'setup.cfg'))


def default_data_dir() -> str:
  """$TFDS_DATA_DIR, else the checkout's `.data/tfds`, else tfds' own ~/tensorflow_datasets."""
  if os.environ.get('TFDS_DATA_DIR'):
    return os.path.expanduser(os.environ['TFDS_DATA_DIR'])
  if _in_checkout():
    return os.path.join(_CHECKOUT, '.data', 'tfds')
  return os.path.expanduser('~/tensorflow_datasets')


def default_manual_dir() -> str:
  """$TFDS_MANUAL_DIR, else `../shared/datasets` beside the checkout when it exists, else ''
  (then preparing downloads the original files)."""
  if os.environ.get('TFDS_MANUAL_DIR'):
    return os.path.expanduser(os.environ['TFDS_MANUAL_DIR'])
  shared = os.path.join(os.path.dirname(_CHECKOUT), 'shared', 'datasets')
  return shared if _in_checkout() and os.path.isdir(shared) else ''


def data_dir_from(configured: str = '') -> str:
  """The tfds data dir: the configured one, else `default_data_dir()`."""
  return os.path.expanduser(configured) if configured else default_data_dir()


def prepare_command(name: str, data_dir: str) -> str:
  try:  # a dataset made from another one's files names their folder (e.g. mnist_detection: mnist)
    folder = getattr(_builder_class(name), 'MANUAL_DIR_SOURCE', name)
  except DatasetNotFoundError:
    folder = name
  return (f'python -m research.data.prepare {name} --data_dir={data_dir} (with TFDS_MANUAL_DIR '
          f'set to a folder holding {folder}/ when there is no internet)')


def _builder_class(name: str):
  """tfds' builder class for `name` (after importing ConvLab's own builders), or a one-line
  error naming the closest known dataset."""
  import tensorflow_datasets as tfds
  from research.data import builders  # noqa: F401  (registers ConvLab's datasets with tfds)
  base = name.split(':')[0].split('/')[0]
  try:
    return tfds.builder_cls(base)
  except Exception:
    close = difflib.get_close_matches(base, tfds.list_builders(), n=1)
    hint = f' (did you mean {close[0]!r}?)' if close else ''
    raise DatasetNotFoundError(f'tfds knows no dataset named {base!r}{hint}') from None


def open_source(name: str, split: str, data_dir: str = ''):
  """A random-access tfds source (array_record), or a one-line error that says why not: an
  unknown dataset name, a dataset not prepared in `data_dir`, a preparation whose files are
  missing or in another format, or a split the dataset does not have."""
  import tensorflow_datasets as tfds
  data_dir = data_dir_from(data_dir)
  _builder_class(name)
  base = name.split(':')[0]
  folder = os.path.join(data_dir, *base.split('/'))
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises many kinds; find the true reason
    error = e
  from etils import epath
  prepared = epath.Path(folder).exists() and any(  # <version>/ or <config>/<version>/
      any(epath.Path(folder).glob(pattern)) for pattern in ('*/dataset_info.json',
                                                             '*/*/dataset_info.json'))
  if not prepared:
    raise DatasetNotFoundError(f'dataset {name!r} is not prepared in {data_dir}; prepare it '
                               f'with: {prepare_command(name, data_dir)}')
  if isinstance(error, ValueError) and 'split' in str(error).lower():  # names the known splits
    raise DatasetNotFoundError(f'dataset {name!r}: {str(error).strip().splitlines()[0]}')
  if isinstance(error, NotImplementedError):
    raise DatasetNotFoundError(
        f'dataset {name!r} in {folder} was prepared as TFRecord, which cannot be read by random '
        f'access; delete {folder} and prepare it again with: {prepare_command(name, data_dir)}')
  reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
  raise DatasetNotFoundError(
      f'dataset {name!r} in {folder} is incomplete or damaged ({type(error).__name__}: {reason}); '
      f'delete {folder} and prepare it again with: {prepare_command(name, data_dir)}')


@dataclasses.dataclass(frozen=True)
class ArraySplit:
  """A split (or this process's part of one) decoded into memory: uint8 images (N, H, W, C),
  int32 labels (N,), and the number of classes of the whole dataset.

  `extras` holds more per-example arrays, row i belonging to example i (e.g. a detection
  split's padded boxes (N, M, 4)); the loaders (research/data/in_memory.py) put them into
  every batch under their names, beside 'image' and 'label'."""
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  extras: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for name, array in self.extras.items():
      if name in ('image', 'label', 'mask'):
        raise ValueError(f'an extra array may not be named {name!r}: batches use that name')
      if len(array) != len(self.labels):
        raise ValueError(f'extra array {name!r} has {len(array)} rows for {len(self.labels)} '
                         'examples')

  def __len__(self):
    return len(self.labels)

  def rows(self, rows) -> dict:
    """{'image', 'label', extras...} of the examples at `rows` (an index array)."""
    return {'image': self.images[rows], 'label': self.labels[rows],
            **{name: array[rows] for name, array in self.extras.items()}}


def split_size(name: str, split: str, data_dir: str = '') -> int:
  """The number of examples in a split, without decoding any."""
  return len(open_source(name, split, data_dir))


def _read(source, indices, name: str, data_dir: str) -> list:
  try:
    return source.__getitems__(list(indices))  # one batched read: fastest
  except TypeError:  # tfds.testing.mock_data's patched sources only support indexing
    return [source[int(i)] for i in indices]
  except Exception as e:  # a file deleted or truncated after preparation
    folder = os.path.join(data_dir_from(data_dir), *name.split(':')[0].split('/'))
    reason = ' '.join(str(e).split())[:200] or type(e).__name__
    raise DatasetNotFoundError(
        f'dataset {name!r} in {folder} is incomplete or damaged ({reason}); delete {folder} and '
        f'prepare it again with: {prepare_command(name, data_dir_from(data_dir))}') from None


def load_split(name: str, split: str, data_dir: str = '', image_key: str = 'image',
               label_key: str = 'label', classes: tuple[int, ...] = (),
               indices=None) -> ArraySplit:
  """Decodes a split into memory (MNIST's 60k training images: ~3 s on 2 cores); with
  `indices`, only those examples, in that order.

  With `classes`, keeps only examples of those labels, renumbered 0..len(classes)-1 in order.
  """
  source = open_source(name, split, data_dir)
  features = source.dataset_info.features
  for key in (image_key, label_key):
    if key not in features:
      raise DatasetNotFoundError(
          f'dataset {name!r} has no feature {key!r}; it has {", ".join(features.keys())}')
  if len(source) == 0:
    raise DatasetNotFoundError(f'dataset {name!r} split {split!r} is empty')
  indices = np.arange(len(source)) if indices is None else np.asarray(indices, np.int64)
  records = _read(source, indices, name, data_dir) if len(indices) else []
  sample = records[0][image_key] if records else source[0][image_key]
  images = (np.stack([np.asarray(r[image_key]) for r in records]) if records
            else np.zeros((0, *np.asarray(sample).shape), np.uint8))
  labels = np.asarray([r[label_key] for r in records], dtype=np.int32)
  if images.ndim == 3:  # (N, H, W) -> (N, H, W, 1)
    images = images[..., None]
  num_classes = int(features[label_key].num_classes)
  if classes:
    if any(not 0 <= c < num_classes for c in classes) or len(set(classes)) != len(classes):
      raise DatasetNotFoundError(f'data.classes={tuple(classes)} must be distinct labels of '
                                 f'{name} (0..{num_classes - 1})')
    keep = np.isin(labels, classes)
    renumber = np.zeros(num_classes, np.int32)
    renumber[list(classes)] = np.arange(len(classes))
    images, labels, num_classes = images[keep], renumber[labels[keep]], len(classes)
  return ArraySplit(images=images, labels=labels, num_classes=num_classes)

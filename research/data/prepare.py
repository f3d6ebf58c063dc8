"""Prepare tfds datasets offline, as array_record files that can be read by random access.

    TFDS_MANUAL_DIR=../shared/datasets TFDS_DATA_DIR=.data/tfds \
        python -m research.data.prepare mnist

With `TFDS_MANUAL_DIR` set, each dataset's original files are taken from
`$TFDS_MANUAL_DIR/<name>/` (checked against the checksums tfds registers for them) and
nothing is downloaded; without it tfds downloads them. Writing needs TensorFlow
(`pip install -e .[prepare]`); reading the result does not.
"""
import argparse
import os
import sys

from research.data.sources import data_dir_from
from research.errors import DatasetNotFoundError


def prepare(name: str, data_dir: str, manual_dir: str | None) -> str:
  """Writes `name` into `data_dir` as array_record; returns the dataset's folder."""
  try:
    import tensorflow  # noqa: F401  (tfds writes datasets through TensorFlow)
  except ImportError:
    raise DatasetNotFoundError(
        'preparing tfds datasets needs TensorFlow: pip install -e ".[prepare]"') from None
  import tensorflow_datasets as tfds

  builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
  dataset_manual_dir = None
  if manual_dir:
    dataset_manual_dir = os.path.join(manual_dir, name)
    if not os.path.isdir(dataset_manual_dir):
      raise DatasetNotFoundError(
          f'TFDS_MANUAL_DIR={manual_dir} has no folder {name}/ with the original files of {name}')
  config = tfds.download.DownloadConfig(
      manual_dir=dataset_manual_dir, try_download_gcs=dataset_manual_dir is None)
  # Each dataset gets its own download dir: tfds caches extracted files by file name, and
  # datasets sharing file names (MNIST, Fashion-MNIST) would otherwise read each other's.
  builder.download_and_prepare(
      download_dir=os.path.join(data_dir, 'downloads', name), download_config=config)
  return str(builder.data_dir)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('names', nargs='+', help='tfds dataset names, e.g. mnist')
  parser.add_argument('--data_dir', default='', help='default: $TFDS_DATA_DIR, else tfds default')
  parser.add_argument('--manual_dir', default=os.environ.get('TFDS_MANUAL_DIR', ''),
                      help='folder holding <name>/ with original files (default: $TFDS_MANUAL_DIR)')
  args = parser.parse_args(argv)
  data_dir = data_dir_from(args.data_dir)
  for name in args.names:
    try:
      path = prepare(name, data_dir, args.manual_dir or None)
    except DatasetNotFoundError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
    print(f'{name}: prepared in {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())

"""Prepare tfds datasets, offline where their original files are at hand, as array_record files
that can be read by random access.

    python -m research.data.prepare mnist isbi2012_em [--data_dir=... --manual_dir=...]

The data dir and the folder of original files default to what the experiments use
(research/data/sources.py: $TFDS_DATA_DIR, else the checkout's .data/tfds; $TFDS_MANUAL_DIR,
else ../shared/datasets beside the checkout). Where `<manual_dir>/<name>/` exists, its files
are checked against the checksums tfds registers for them and nothing is downloaded (said on
the output line; a builder made from another dataset's files names that folder in its
`MANUAL_DIR_SOURCE`: mnist_detection reads `<manual_dir>/mnist/`); otherwise tfds downloads
them. Writing needs TensorFlow (`pip install -e .[prepare]`); reading the result does not.
Output is one line per dataset (no progress bars unless on a terminal). Each failure is one
`error:` line, and the other names are still prepared; the exit code is 1 if any failed.
"""
import argparse
import os
import re
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # before TensorFlow loads: no start-up chatter
os.environ.setdefault('NO_GCE_CHECK', 'true')       # tfds need not look for Google Cloud credentials
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # TensorFlow only writes files here

from research.data import sources  # noqa: E402
from research.errors import DatasetNotFoundError


def _checksum_message(e: Exception, name: str, manual: str | None) -> str:
  text = str(e)
  file = re.search(r"downloaded to (\S+?), has wrong checksum", text)
  sizes = re.findall(r'size=([^,]+),', text)
  detail = (f'{file.group(1)}: {sizes[1]} where tfds expects {sizes[0]}' if file and len(sizes) == 2
            else ' '.join(text.split())[:300])
  where = f'the original files in {manual}' if manual else 'the downloaded files'
  return (f'{name}: {where} do not match the checksums tfds registers ({detail}); replace them '
          'with the original files')


def prepare(name: str, data_dir: str, manual_dir: str | None) -> str:
  """Writes `name` into `data_dir` as array_record; returns a line saying what was done."""
  try:
    import tensorflow  # noqa: F401  (tfds writes datasets through TensorFlow)
  except ImportError:
    raise DatasetNotFoundError(
        'preparing tfds datasets needs TensorFlow: pip install -e ".[prepare]"') from None
  import tensorflow_datasets as tfds
  if not sys.stdout.isatty():
    tfds.disable_progress_bar()

  builder_class = sources._builder_class(name)  # noqa: SLF001  (an unknown name: one line)
  builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
  folder = getattr(builder_class, 'MANUAL_DIR_SOURCE', name.split(':')[0].split('/')[0])
  dataset_manual_dir = os.path.join(manual_dir, folder) if manual_dir else None
  if dataset_manual_dir and not os.path.isdir(dataset_manual_dir):
    dataset_manual_dir = None
  already = builder.is_prepared() if hasattr(builder, 'is_prepared') else os.path.isdir(builder.data_dir)
  config = tfds.download.DownloadConfig(
      manual_dir=dataset_manual_dir, try_download_gcs=dataset_manual_dir is None)
  try:
    # Each dataset gets its own download dir: tfds caches extracted files by file name, and
    # datasets sharing file names (MNIST, Fashion-MNIST) would otherwise read each other's.
    builder.download_and_prepare(
        download_dir=os.path.join(data_dir, 'downloads', name.replace('/', '_')),
        download_config=config)
  except Exception as e:
    if type(e).__name__ == 'NonMatchingChecksumError':  # tfds has two classes of that name
      raise DatasetNotFoundError(_checksum_message(e, name, dataset_manual_dir)) from None
    if isinstance(e, (AssertionError, FileNotFoundError)):  # manual files missing or misnamed
      raise DatasetNotFoundError(f'{name}: {" ".join(str(e).split())[:300]}') from None
    if dataset_manual_dir:
      raise
    reason = ' '.join(str(e).split())[:200] or type(e).__name__
    raise DatasetNotFoundError(
        f'{name}: no original files in {manual_dir or "(no manual dir)"}/{name}/ and the '
        f'download failed ({type(e).__name__}: {reason}); put the original files there or '
        'connect to the internet') from None
  how = ('already prepared' if already else
         f'prepared from the original files in {dataset_manual_dir} (nothing downloaded)'
         if dataset_manual_dir else 'prepared from downloaded files')
  return f'{name}: {how} -> {builder.data_dir}'


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('names', nargs='+', help='tfds dataset names, e.g. mnist isbi2012_em')
  parser.add_argument('--data_dir', default='',
                      help=f'default: {sources.default_data_dir()} (research/data/sources.py)')
  parser.add_argument('--manual_dir', default=None,
                      help=f'folder holding <name>/ with original files (default: '
                           f'{sources.default_manual_dir() or "none: download"})')
  args = parser.parse_args(argv)
  data_dir = sources.data_dir_from(args.data_dir)
  manual_dir = sources.default_manual_dir() if args.manual_dir is None else args.manual_dir
  if args.manual_dir and not os.path.isdir(args.manual_dir):
    print(f'error: --manual_dir={args.manual_dir} is not a folder', file=sys.stderr)
    return 1
  failed = 0
  for name in args.names:
    try:
      print(prepare(name, data_dir, manual_dir or None), flush=True)
    except DatasetNotFoundError as e:
      print(f'error: {e}', file=sys.stderr, flush=True)
      failed += 1
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())

"""The original MNIST files (LeCun, Cortes, Burges): checksum-checked and decoded with NumPy,
for ConvLab's datasets derived from MNIST (they prepare offline from `$TFDS_MANUAL_DIR/mnist/`).
"""
import gzip
import hashlib
import os

import numpy as np

from research.errors import DatasetNotFoundError

FILES = {'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
         'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')}
MD5 = {'train-images-idx3-ubyte.gz': 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
       'train-labels-idx1-ubyte.gz': 'd53e105ee54ea40749a09fcbcd1e9432',
       't10k-images-idx3-ubyte.gz': '9fb629c4189551a2d022fa330f9573f3',
       't10k-labels-idx1-ubyte.gz': 'ec29112dd5afa0611ce80d1b7f02629c'}


def read_md5sums(folder: str) -> dict[str, str]:
  """{file name: md5} from `folder/MD5SUMS` (md5sum's output format), or {} without one."""
  path = os.path.join(folder, 'MD5SUMS')
  if not os.path.isfile(path):
    return {}
  sums = {}
  for line in open(path):
    parts = line.split()
    if len(parts) == 2:
      sums[parts[1].lstrip('*')] = parts[0].lower()
  return sums


def _checked_bytes(folder: str, name: str, listed: dict[str, str]) -> bytes:
  path = os.path.join(folder, name)
  if not os.path.isfile(path):
    raise DatasetNotFoundError(f'{path} is missing: put the 4 original MNIST .gz files in '
                               f'{folder}')
  data = open(path, 'rb').read()
  digest = hashlib.md5(data).hexdigest()
  for what, expected in (('the official MD5', MD5[name]), ('MD5SUMS', listed.get(name, MD5[name]))):
    if digest != expected:
      raise DatasetNotFoundError(f'{path} has MD5 {digest}, not {expected} ({what}): replace it '
                                 'with the original file')
  return gzip.decompress(data)


def load(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 (N, 28, 28), labels uint8 (N,)) of 'train' or 'test' from the original idx
  .gz files in `folder`, in the files' order, after checking their MD5s (the official ones, and
  the folder's MD5SUMS file when it has one)."""
  listed = read_md5sums(folder)
  images_name, labels_name = FILES[split]
  images = np.frombuffer(_checked_bytes(folder, images_name, listed), np.uint8, offset=16)
  labels = np.frombuffer(_checked_bytes(folder, labels_name, listed), np.uint8, offset=8)
  return images.reshape(-1, 28, 28), labels.copy()

"""MNIST with each image's original file index and, for the test set, its writer population.

The MNIST authors document the test set's composition: its first 5,000 images come from NIST's
Special Database 3 (digits written by Census Bureau employees), the last 5,000 from Special
Database 1 (written by high-school students), and "the first 5000 are cleaner and easier". The
stock tfds `mnist` does not keep the file order, so this dataset, prepared offline from the
same original files (`$TFDS_MANUAL_DIR/mnist/`, MD5-checked), keeps it: `index` is the position
in the original file, `writer_population` is `sd3_census_employees` (index < 5000) or
`sd1_high_school_students` for test images, and `unknown` for training images (the training
set mixes 30,000 of each, in an undocumented order). Images are pixel-identical to tfds mnist's.

    python -m research.data.prepare mnist_writers
"""
import numpy as np
import tensorflow_datasets as tfds

from research.data.builders import mnist_files

POPULATIONS = ('sd3_census_employees', 'sd1_high_school_students', 'unknown')
FIRST_SD1_TEST_INDEX = 5000


class MnistWriters(tfds.core.GeneratorBasedBuilder):
  """MNIST in the original file order, with the test set's writer population."""

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put the 4 original MNIST .gz files in <manual_dir>/mnist/.'
  MANUAL_DIR_SOURCE = 'mnist'  # research/data/prepare.py: the folder holding the files

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(28, 28, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
            'index': np.int64,
            'writer_population': tfds.features.ClassLabel(names=POPULATIONS),
        }),
        supervised_keys=('image', 'label'),
        citation='LeCun, Cortes, Burges: The MNIST database of handwritten digits.')

  def _split_generators(self, dl_manager):
    folder = str(dl_manager.manual_dir)
    return {'train': self._generate_examples(folder, 'train'), 'test': self._generate_examples(folder, 'test')}

  def _generate_examples(self, folder, split):
    images, labels = mnist_files.load(folder, split)
    for index, (image, label) in enumerate(zip(images, labels)):
      if split == 'test':
        population = POPULATIONS[0] if index < FIRST_SD1_TEST_INDEX else POPULATIONS[1]
      else:
        population = POPULATIONS[2]
      yield index, {'image': image[..., None], 'label': int(label), 'index': index,
                    'writer_population': population}

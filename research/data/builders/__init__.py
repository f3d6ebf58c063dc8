"""ConvLab's own tfds datasets, registered with tfds on import; each prepares offline from the
original files in `$TFDS_MANUAL_DIR/<name>/` (or the folder its MANUAL_DIR_SOURCE names):
`python -m research.data.prepare <name>`."""
from research.data.builders import isbi2012_em  # noqa: F401
from research.data.builders import mnist_detection  # noqa: F401
from research.data.builders import mnist_writers  # noqa: F401

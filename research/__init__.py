"""ConvLab's library, grouped by stage: data/, models/, kernels/, training/ (the shared loop),
tasks/ (one module per kind of experiment), tools/.

Nothing in here imports `experiments/`.
"""
import os

# TensorFlow comes in with tensorflow-datasets where it is installed (the `prepare` extra); it
# only reads and writes dataset files here, so its start-up logs and GCE probing are noise.
for _name, _value in (('TF_CPP_MIN_LOG_LEVEL', '3'), ('TF_ENABLE_ONEDNN_OPTS', '0'),
                      ('NO_GCE_CHECK', 'true')):
  os.environ.setdefault(_name, _value)

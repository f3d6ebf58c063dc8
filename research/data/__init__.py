"""Datasets: offline preparation, in-memory and streaming loaders, and preprocessing ops."""
from research.data.augment import make_preprocess
from research.data.in_memory import InMemoryLoader, eval_batches
from research.data.sources import ArraySplit, data_dir_from, load_split, open_source

__all__ = ['ArraySplit', 'InMemoryLoader', 'data_dir_from', 'eval_batches', 'load_split',
           'make_preprocess', 'open_source']

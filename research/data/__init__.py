"""Datasets: offline preparation, in-memory and streaming loaders, and preprocessing ops."""
from research.data.augment import make_preprocess
from research.data.in_memory import InMemoryLoader, eval_batches, eval_shard
from research.data.sources import (ArraySplit, data_dir_from, default_data_dir, load_split,
                                   open_source, split_size)

__all__ = ['ArraySplit', 'InMemoryLoader', 'data_dir_from', 'default_data_dir', 'eval_batches',
           'eval_shard', 'load_split', 'make_preprocess', 'open_source', 'split_size']

"""fcnet's data layer: every dataset as one Dataset, split reproducibly, one-line errors on bad input."""

from fcnet.data.cache import cache_dir
from fcnet.data.core import Dataset, Split, SplitData
from fcnet.data.load import DATASETS, get_CIFAR10_data, load_dataset, load_splits
from fcnet.data.preprocess import Preprocessor
from fcnet.data.splits import make_splits

__all__ = ["DATASETS", "Dataset", "Preprocessor", "Split", "SplitData", "cache_dir",
           "get_CIFAR10_data", "load_dataset", "load_splits", "make_splits"]

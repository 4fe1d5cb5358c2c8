"""fcnet's data layer: every dataset a user meets, loaded into one Dataset shape,
split reproducibly, preprocessed from the training split only, and failing with
one clear line (FcnetError) on anything malformed.

    data = load_splits("cifar10", path="cifar10-jpeg.tar.gz")
    prep = Preprocessor("mean").fit(data.train.x)
    X_train = prep.transform(data.train.x)
"""

from fcnet.data.cache import cache_dir
from fcnet.data.core import Dataset, Split, SplitData
from fcnet.data.load import DATASETS, get_CIFAR10_data, load_dataset, load_splits
from fcnet.data.preprocess import Preprocessor
from fcnet.data.splits import make_splits

__all__ = ["DATASETS", "Dataset", "Preprocessor", "Split", "SplitData", "cache_dir",
           "get_CIFAR10_data", "load_dataset", "load_splits", "make_splits"]

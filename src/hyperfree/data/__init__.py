"""Datasets and the tensor data path.

* :func:`load_dataset` / :func:`list_datasets` — Fashion-MNIST (vendored), MNIST, CIFAR-10/100
  from their official files, ImageNet from folders of JPEGs, char-level text from any UTF-8 file.
* :class:`TensorLoader` — device-resident batching with whole-batch augmentation, deterministic
  per ``(seed, epoch)``, and the DDP split of a global batch across ranks.
* :class:`DataError` — a missing, corrupt or unsafe file (one-line message with the fix).
"""
from ._registry import get_dataset_info, list_datasets, load_dataset
from ._types import DataBundle, DataError, DatasetInfo
from .loader import TensorLoader

__all__ = ["load_dataset", "list_datasets", "get_dataset_info", "DatasetInfo", "DataBundle",
           "TensorLoader", "DataError"]

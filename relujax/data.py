"""Datasets and the on-device input pipeline.

CIFAR-10, CIFAR-2 (the book's airplanes vs birds), MNIST, a user's ``npz:PATH`` and a built-in
synthetic set, loaded to host memory as a `Dataset`; then put on the device once and batched,
augmented and normalised there, inside jit.
"""

from relujax._src.data.cifar import CIFAR_MEAN as CIFAR_MEAN
from relujax._src.data.cifar import CIFAR_STD as CIFAR_STD
from relujax._src.data.dataset import DataError as DataError
from relujax._src.data.dataset import Dataset as Dataset
from relujax._src.data.dataset import channel_stats as channel_stats
from relujax._src.data.load import DATASETS as DATASETS
from relujax._src.data.load import load_dataset as load_dataset
from relujax._src.data.pipeline import augment as augment
from relujax._src.data.pipeline import epoch_indices as epoch_indices
from relujax._src.data.pipeline import get_batch as get_batch
from relujax._src.data.pipeline import normalize as normalize
from relujax._src.data.pipeline import put_on_device as put_on_device
from relujax._src.data.sharding import batch_sharding as batch_sharding
from relujax._src.data.sharding import data_mesh as data_mesh
from relujax._src.data.sharding import replicated_sharding as replicated_sharding

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATASETS",
    "DataError",
    "Dataset",
    "augment",
    "batch_sharding",
    "channel_stats",
    "data_mesh",
    "epoch_indices",
    "get_batch",
    "load_dataset",
    "normalize",
    "put_on_device",
    "replicated_sharding",
]

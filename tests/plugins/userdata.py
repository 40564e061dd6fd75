"""A user's own data, registered as a plugin would (``dnas --plugin userdata --data user-blobs``)."""
import torch
from torch.utils.data import Dataset, TensorDataset

import dnas


class Blobs(Dataset):
    """A plain map-style dataset (no ``targets``, no ``classes``): labels 0-2, images 1×10×10."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.x = torch.randn(n, 1, 10, 10, generator=g) + self.y.view(-1, 1, 1, 1).float()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


@dnas.register_dataset("user-blobs")
def blobs(cfg):
    return Blobs(240, 0), Blobs(60, 1)


@dnas.register_dataset("user-table")
def table():
    x = torch.rand(160, 5, generator=torch.Generator().manual_seed(0))
    y = x.sum(1, keepdim=True)
    return TensorDataset(x[:120], y[:120]), TensorDataset(x[120:], y[120:])

"""Datasets by name, the bilevel train/val split, and deterministic per-epoch loaders.

Names: ``digits`` (scikit-learn's bundled 8x8 digits: the embedded default, no download),
``synthetic`` (tiny, learnable, for tests), ``fashion-mnist``, ``cifar10``, ``cifar100``
(torchvision format under ``data_dir``; downloaded only with ``download=True``),
``imagefolder:PATH``, tables ``csv:PATH`` (.csv/.npy/.npz, ``target`` columns; text labels are
classes, numbers a regression unless ``task: classification``) and ``synthetic-regression``
(y = exp(x) + max(x, 0)).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler, Subset, TensorDataset

from dnas.errors import DnasError, first_line
from dnas.registry import Registry
from dnas.space import Task


@dataclass
class DataConfig:
    name: str = "digits"
    data_dir: str = "data"
    download: bool = False
    batch_size: int = 64
    train_portion: float = 0.5  # bilevel: first part trains w, the rest trains α (DARTS: halves)
    subset: float = 1.0  # fraction of the training set used (CSNAS: 0.1)
    augment: bool = True
    num_workers: int = 0
    target: str = ""  # csv:PATH: target columns, names or indices "a,b" (default: the last)
    task: str = "auto"  # csv:PATH: classification, regression, or auto (text targets: classification)
    image_size: int = 32  # imagefolder:PATH: images are resized (shorter side) and centre-cropped to this side

    def check(self):
        if not 0 < self.train_portion < 1:
            return "train_portion must be in (0, 1)"
        if not 0 < self.subset <= 1:
            return "subset must be in (0, 1]"
        if self.batch_size < 1:
            return "batch_size must be >= 1"
        if self.image_size < 1:
            return "image_size must be >= 1"
        if self.task not in ("auto", "classification", "regression"):
            return "task must be auto, classification or regression"
        return None


@dataclass
class Datasets:
    train: Dataset
    test: Dataset
    task: Task


class TransformDataset(Dataset):
    """Apply ``transform`` to the input of (x, y) pairs of another dataset."""

    def __init__(self, base: Dataset, transform: Callable):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return self.transform(x), y


def _digits() -> Datasets:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - 0.3) / 0.4  # roughly zero-mean, unit-variance
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # fixed split, 1437 / 360
    n_test = len(y) // 5
    test, train = perm[:n_test], perm[n_test:]
    return Datasets(TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test]), Task((1, 8, 8), 10))


def synthetic_dataset(n_train: int = 256, n_test: int = 128, classes: int = 4, shape=(3, 8, 8), seed: int = 0) -> Datasets:
    """Gaussian blobs around one random prototype image per class: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(classes, *shape, generator=g)

    def make(n):
        y = torch.randint(0, classes, (n,), generator=g)
        return TensorDataset(protos[y] + 0.8 * torch.randn(n, *shape, generator=g), y)

    return Datasets(make(n_train), make(n_test), Task(tuple(shape), classes))


_TORCHVISION = {
    "cifar10": ("CIFAR10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ("CIFAR100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion-mnist": ("FashionMNIST", (0.2860,), (0.3530,)),
}
#: the names load_datasets knows without a plugin (``PREFIX:`` ones take a path)
BUILTIN_DATASETS = ("digits", "synthetic", "synthetic-regression", *_TORCHVISION, "imagefolder:", "csv:")
#: the user's datasets (``@register_dataset``): name -> function returning the train and test sets
DATASETS: Registry[Callable] = Registry("dataset")


def register_dataset(name: str):
    """Function decorator: make your data available as ``--data name`` (``data="name"``) to every
    command (search, train, compare, prune --eval-data) and to ``--resume``.

    Args:
        name: the dataset name; it must not be a built-in one (``digits``, ``cifar10``, ...).

    Returns:
        The decorator. The function is called with the run's
        :class:`~dnas.engine.data.DataConfig` (``data_dir``, ``download``, ``image_size``, ...) or
        with no argument, and returns ``Datasets(train, test, Task)`` or a ``(train, test)`` pair of
        torch datasets of ``(x, y)`` tensors, whose task (input shape, classes or regression
        targets) is then read from the data.

    Example:
        >>> @register_dataset("my-scans")
        ... def my_scans(cfg):
        ...     return TensorDataset(x_train, y_train), TensorDataset(x_test, y_test)
    """
    if name in BUILTIN_DATASETS or (":" in name and name.partition(":")[0] + ":" in BUILTIN_DATASETS):
        raise DnasError(f"dataset {name!r} is a built-in name; register yours under another")
    return DATASETS.register(name)


def _torchvision(name: str, root: str, download: bool, augment: bool) -> Datasets:
    import torchvision
    from torchvision import transforms as T

    cls_name, mean, std = _TORCHVISION[name]
    cls = getattr(torchvision.datasets, cls_name)
    size = 28 if name == "fashion-mnist" else 32
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    aug = [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()] if augment and name != "fashion-mnist" else []
    try:
        train = cls(root, train=True, download=download, transform=T.Compose(aug + norm))
        test = cls(root, train=False, download=download, transform=T.Compose(norm))
    except RuntimeError:
        raise DnasError(
            f"dataset '{name}' not found under '{Path(root).resolve()}'; put it there (torchvision layout), "
            f"pass --data-dir DIR, or add --download to fetch it"
        ) from None
    return Datasets(train, test, Task((len(mean), size, size), len(train.classes)))


def _imagefolder(path: str, size: int = 32) -> Datasets:
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    root = Path(path)
    if not root.is_dir():
        raise DnasError(f"image folder '{root}' not found; expected class sub-folders (or train/ and val/ inside)")
    tf = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor()])

    def folder(p: Path) -> ImageFolder:
        try:
            return ImageFolder(p, tf)
        except (FileNotFoundError, OSError) as e:  # no class sub-folders, or no image in them
            raise DnasError(f"image folder '{p}': {first_line(e)}; expected one sub-folder of images per class") from None

    if (root / "train").is_dir():
        held = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
        if held is None:
            raise DnasError(f"image folder '{root}' has train/ but neither val/ nor test/ beside it")
        train, test = folder(root / "train"), folder(held)
        if test.classes != train.classes:
            raise DnasError(f"image folder '{root}': train/ and {held.name}/ hold other classes "
                            f"({', '.join(train.classes)} vs {', '.join(test.classes)}); give both the same class sub-folders")
        classes = train.classes
    else:
        full = folder(root)
        perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(0)).tolist()
        n_test = len(full) // 5
        train, test = Subset(full, perm[n_test:]), Subset(full, perm[:n_test])
        train.classes = classes = full.classes
    return Datasets(train, test, Task((3, size, size), len(classes)))


def synthetic_regression_dataset(fn: Callable[[torch.Tensor], torch.Tensor] | None = None, in_dim: int = 1,
                                 n_train: int = 512, n_test: int = 256, seed: int = 0) -> Datasets:
    """Regression data ``y = Σ_j f(x_j)``, x uniform in [-2, 2]^in_dim; f defaults to exp(x) + max(x, 0)."""
    fn = fn or (lambda x: torch.exp(x) + x.clamp_min(0))
    g = torch.Generator().manual_seed(seed)

    def make(n):
        x = torch.rand(n, in_dim, generator=g) * 4 - 2
        return TensorDataset(x, fn(x).sum(1, keepdim=True))

    return Datasets(make(n_train), make(n_test), Task((in_dim,), 0, out_dim=1))


def table_dataset(path: str, target: str = "", test_fraction: float = 0.2, task: str = "auto") -> Datasets:
    """A table from a CSV (header row optional), ``.npy`` (2-D array) or ``.npz`` (arrays ``x``, ``y``).

    ``target``: comma-separated column names or indices (default: the last column); the other columns
    are the inputs, numbers only. ``task``: ``classification`` (one target column; its distinct values,
    text or numbers, become classes 0..K-1 in sorted order), ``regression`` (numeric targets), or
    ``auto``: classification when the target holds text, else regression. A fixed 80/20 split.
    """
    import numpy as np

    if task not in ("auto", "classification", "regression"):
        raise DnasError(f"data.task must be auto, classification or regression (got {task!r})")
    p = Path(path)
    if not p.is_file():
        raise DnasError(f"data file '{p}' not found; --data csv:PATH takes a .csv, .npy or .npz file")
    try:
        if p.suffix == ".npz":
            z = np.load(p, allow_pickle=False)
            if "x" not in z or "y" not in z:
                raise DnasError(f"'{p}' must hold arrays named x and y (np.savez(path, x=..., y=...))")
            x, y, ynames = np.asarray(z["x"], np.float32).reshape(len(z["x"]), -1), np.asarray(z["y"]).reshape(len(z["y"]), -1), []
        else:
            if p.suffix == ".npy":
                table, names = np.load(p, allow_pickle=False), []
                if table.ndim != 2:
                    raise DnasError(f"'{p}' must be a 2-D table with at least one input and one target column")
            else:
                table, names = _read_csv(p)
            if table.shape[1] < 2:
                raise DnasError(f"'{p}' must be a 2-D table with at least one input and one target column")
            cols = [_column(c.strip(), names, table.shape[1], p) for c in target.split(",") if c.strip()] or [table.shape[1] - 1]
            inputs = [j for j in range(table.shape[1]) if j not in cols]
            x, y = _numeric(table[:, inputs], [names[j] if names else str(j) for j in inputs], p, int(bool(names))), table[:, cols]
            ynames = [names[j] if names else str(j) for j in cols]
    except (ValueError, OSError, IndexError) as e:
        raise DnasError(f"cannot read '{p}' as a table ({first_line(e)})") from None
    numeric = y.dtype != object or all(_is_number(v) for v in y.ravel())
    if task == "auto":
        task = "regression" if numeric else "classification"
        if numeric:
            _warn_if_labels(y, p)
    if task == "regression":
        if not numeric:
            raise DnasError(f"'{p}': the target column {ynames[0]!r} holds text, which regression cannot fit; "
                            f"set data.task=classification (--set data.task=classification)")
        yt, out = torch.from_numpy(np.ascontiguousarray(y.astype(np.float32))), {}
    else:
        if y.shape[1] != 1:
            raise DnasError(f"'{p}': classification takes one target column, got {y.shape[1]} (--target COLUMN)")
        values = y[:, 0].astype(np.float64) if numeric else y[:, 0].astype(str)
        classes, labels = np.unique(values, return_inverse=True)  # sorted: numbers by value, text by code point
        yt = torch.from_numpy(labels.reshape(-1).astype(np.int64))
        out = {"classes": [_label(c) for c in classes]}
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    for what, t in (("input", xt), ("target", yt)):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            row = int((~torch.isfinite(t)).reshape(len(t), -1).any(1).nonzero()[0])
            raise DnasError(f"'{p}': an {what} is NaN or infinite in data row {row + 1}; fill or drop such rows first")
    perm = torch.randperm(len(xt), generator=torch.Generator().manual_seed(0))
    n_test = max(1, int(len(xt) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    train, test = TensorDataset(xt[tr], yt[tr]), TensorDataset(xt[te], yt[te])
    if out:
        train.classes = test.classes = out["classes"]  # as torchvision datasets name them
        return Datasets(train, test, Task((xt.shape[1],), len(out["classes"])))
    return Datasets(train, test, Task((xt.shape[1],), 0, out_dim=yt.shape[1]))


def _read_csv(p: Path):
    """The cells of a CSV as a 2-D array of str, and its header's names ([] without one). The first row
    is a header when all its cells are text, or one is text above a number."""
    import csv

    import numpy as np

    with open(p, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise DnasError(f"'{p}' is empty")
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        bad = next(i for i, r in enumerate(rows) if len(r) != len(rows[0]))
        raise DnasError(f"'{p}': row {bad + 1} has {len(rows[bad])} cells, the first row {len(rows[0])}")
    first = [c.strip() for c in rows[0]]
    text = [not _is_number(c) for c in first]
    header = all(text) or (len(rows) > 1 and any(t and _is_number(c) for t, c in zip(text, rows[1])))
    table = np.array([[c.strip() for c in r] for r in rows[int(header):]], dtype=object)
    if not len(table):
        raise DnasError(f"'{p}' has a header and no rows")
    return table, first if header else []


def _numeric(cells, names: list[str], p: Path, skipped: int):
    """Input columns as float32; a text or empty cell is one clear error naming its row and column."""
    import numpy as np

    if cells.dtype != object:
        return np.asarray(cells, np.float32)
    for j in range(cells.shape[1]):
        for i, c in enumerate(cells[:, j]):
            if not _is_number(c):
                what = "is empty" if c == "" else f"holds text ({c!r})"
                raise DnasError(f"'{p}': input column {names[j]!r} {what} at line {i + 1 + skipped}; inputs must be numbers "
                                f"(encode categories as numbers, or name the column in --target)")
    return cells.astype(np.float32)


def _warn_if_labels(y, p: Path) -> None:
    """Whole numbers with few distinct values look like class labels read as regression: say how to switch."""
    import warnings

    import numpy as np

    v = y.astype(np.float64)
    if v.shape[1] == 1 and np.all(v == np.round(v)):
        k = len(np.unique(v))
        if 2 <= k <= 20 and k * 5 <= len(v):
            warnings.warn(f"'{p}': the target has {k} distinct whole numbers and is read as regression; "
                          f"for classes set data.task=classification (--set data.task=classification)", stacklevel=3)


def _label(c):
    """A class name: text as it is, a whole number as an int, another number as a float."""
    if isinstance(c, str):
        return c
    return int(c) if float(c).is_integer() else float(c)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _column(c: str, names: list[str], n: int, p: Path) -> int:
    if c in names:
        return names.index(c)
    if c.lstrip("-").isdigit() and -n <= int(c) < n:
        return int(c) % n
    raise DnasError(f"target column {c!r} is not in '{p}' (columns: {', '.join(names) or f'0..{n - 1}'})")


#: the ``data.name`` prefix of torch datasets given in Python (``dnas.search(data=(train, test))``)
IN_MEMORY = "python:"


def given_datasets(data: Any) -> Datasets | None:
    """The API's ``data`` argument as datasets: None for a name (loaded by :func:`load_datasets`);
    torch datasets given in Python, ``(train, test)`` or :class:`Datasets`, with their task read from
    them (:func:`infer_task`)."""
    if data is None or isinstance(data, str):
        return None
    if isinstance(data, Datasets):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, Dataset) for d in data):
        return Datasets(data[0], data[1], infer_task("given in Python", data[0], data[1]))
    if isinstance(data, Dataset):
        raise DnasError("data: give the train and test sets as a pair, data=(train, test) (one torch dataset cannot be "
                        "told apart into both)")
    raise DnasError(f"data must be a dataset name or torch datasets (train, test), not {type(data).__name__}")


def data_name(data: Any) -> str | None:
    """What config.yaml records as ``data.name``: the name, or ``python:<class>`` for datasets given in Python
    (read from the train set alone: the task is read once, by :func:`given_datasets`)."""
    if data is None or isinstance(data, str):
        return data
    if isinstance(data, Datasets):
        train = data.train
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, Dataset) for d in data):
        train = data[0]
    else:
        given_datasets(data)  # not datasets: its one-line error
    return f"{IN_MEMORY}{type(train).__name__}"


def load_datasets(cfg: DataConfig, given: Datasets | None = None) -> Datasets:
    """The train and test sets of ``cfg.name`` and the task they define; ``given`` (datasets passed in
    Python, :func:`given_datasets`) instead where there are some."""
    if given is not None:
        return given
    name = cfg.name
    if name.startswith(IN_MEMORY):
        raise DnasError(f"this run's data were torch datasets given in Python ({name}); pass them again through the API, "
                        f"dnas.search(resume=DIR, data=(train, test)) or dnas.train(resume=DIR, data=(train, test))")
    if name == "digits":
        return _digits()
    if name == "synthetic-regression":
        return synthetic_regression_dataset()
    if name.startswith("csv:"):
        return table_dataset(name.split(":", 1)[1], cfg.target, task=cfg.task)
    if name == "synthetic":
        return synthetic_dataset()
    if name in _TORCHVISION:
        return _torchvision(name, cfg.data_dir, cfg.download, cfg.augment)
    if name.startswith("imagefolder:"):
        return _imagefolder(name.split(":", 1)[1], cfg.image_size)
    from dnas.registry import did_you_mean

    if name in DATASETS:
        return _registered(name, cfg)
    known = [f"{n}PATH" if n.endswith(":") else n for n in BUILTIN_DATASETS] + DATASETS.names()
    raise DnasError(f"unknown dataset {name!r}{did_you_mean(name, known)}; choose one of: {', '.join(known)} "
                    f"(your own: @dnas.register_dataset, with --plugin MODULE)")


def _registered(name: str, cfg: DataConfig) -> Datasets:
    """A ``@register_dataset`` function's data, with its task read from the data where not given."""
    import inspect

    fn = DATASETS.get(name)
    try:
        takes_cfg = bool(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        takes_cfg = True
    try:
        got = fn(cfg) if takes_cfg else fn()
    except DnasError:
        raise
    except Exception as e:
        raise DnasError(f"dataset {name!r}: its function failed: {type(e).__name__}: {first_line(e)}") from None
    if isinstance(got, Datasets):
        return got
    if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(d, Dataset) for d in got)):
        raise DnasError(f"dataset {name!r} must return Datasets(train, test, Task) or a (train, test) pair of torch "
                        f"datasets, not {type(got).__name__}")
    train, test = got
    return Datasets(train, test, infer_task(name, train, test))


def infer_task(name: str, train: Dataset, test: Dataset) -> Task:
    """The Task of (x, y) datasets: the shape of x; integer labels: classification (classes from the
    dataset's ``classes``, else the largest label + 1); float targets: regression (their size)."""
    if len(train) == 0 or len(test) == 0:
        raise DnasError(f"dataset {name!r}: its {'train' if len(train) == 0 else 'test'} set is empty")
    item = train[0]
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise DnasError(f"dataset {name!r}: items must be (x, y) pairs, got {type(item).__name__}")
    x, y = item
    if not isinstance(x, torch.Tensor):
        raise DnasError(f"dataset {name!r}: inputs must be tensors, got {type(x).__name__} (add a ToTensor transform)")
    y = torch.as_tensor(y)
    if y.is_floating_point():
        return Task(tuple(x.shape), 0, out_dim=max(1, y.numel()))
    classes = getattr(train, "classes", None)
    if classes is not None:
        return Task(tuple(x.shape), len(classes))
    top, test_top = _largest_label(train), _largest_label(test)
    if test_top > top:
        raise DnasError(f"dataset {name!r}: the test set has label {test_top}, above the train set's largest ({top}); "
                        f"give the classes (a `classes` attribute, or return Datasets with a Task)")
    return Task(tuple(x.shape), top + 1)


def _largest_label(ds: Dataset) -> int:
    """The largest label: from ``targets`` (torchvision) or a TensorDataset's last tensor, else by reading every item."""
    labels = getattr(ds, "targets", None)
    if labels is None and isinstance(ds, TensorDataset):
        labels = ds.tensors[-1]
    if labels is not None:
        return int(torch.as_tensor(labels).max())
    return max(int(ds[i][1]) for i in range(len(ds)))


class _Sharded(Sampler):
    def __init__(self, batches: BatchSampler):
        self.batches = batches

    def __iter__(self):
        from dnas.engine.distributed import shard

        for b in self.batches:
            yield shard(b)

    def __len__(self) -> int:
        return len(self.batches)


class SearchData:
    """The bilevel split of a training set, served as (train batch, val batch) pairs per epoch.

    Loader order depends only on (seed, epoch), so a resumed run sees the same batches.
    """

    def __init__(self, datasets: Datasets, cfg: DataConfig, seed: int = 0):
        self.cfg, self.seed, self.task = cfg, seed, datasets.task
        n = int(len(datasets.train) * cfg.subset)
        perm = torch.randperm(len(datasets.train), generator=torch.Generator().manual_seed(seed))[:n].tolist()
        split = max(1, int(n * cfg.train_portion))
        self.train = Subset(datasets.train, perm[:split])
        self.val = Subset(datasets.train, perm[split:]) if split < n else self.train
        self.test = datasets.test

    def loader(self, ds: Dataset, epoch: int, salt: int, shuffle: bool = True) -> DataLoader:
        """Batches in an order fixed by (seed, epoch). Data-parallel: ``batch_size`` is per rank; the
        global batch (batch_size × ranks) is drawn the same on every rank and each takes its shard."""
        from dnas.engine.distributed import rank_and_size

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 2 + salt)
        size = self.cfg.batch_size * rank_and_size()[1]
        sampler = RandomSampler(ds, generator=g) if shuffle else SequentialSampler(ds)
        batches = _Sharded(BatchSampler(sampler, size, drop_last=len(ds) > size))
        return DataLoader(ds, batch_sampler=batches, num_workers=self.cfg.num_workers)

    def steps_per_epoch(self) -> int:
        return len(self.loader(self.train, 0, 0))

    def epoch(self, epoch: int) -> Iterator[tuple[Any, Any]]:
        """(train, val) batch pairs; the val loader cycles if it is shorter."""
        val_iter = iter(self.loader(self.val, epoch, 1))
        for tb in self.loader(self.train, epoch, 0):
            try:
                vb = next(val_iter)
            except StopIteration:
                val_iter = iter(self.loader(self.val, epoch, 1))
                vb = next(val_iter)
            yield tb, vb


# -- two views (self-supervised spaces: NASiam) -------------------------------------------------------
class TwoViews:
    """``x -> (t(x), t(x))``: two independent augmentations of one image (SimSiam/SimCLR)."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, x):
        return self.transform(x), self.transform(x)


class _ColorOnUnitRange:
    """Apply a colour transform only to tensors in [0, 1] (normalised tensors would be clamped)."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, x):
        if isinstance(x, torch.Tensor) and (x.min() < 0 or x.max() > 1):
            return x
        return self.transform(x)


def ssl_augmentation(size: int, channels: int) -> list[Callable]:
    """The SimSiam/SimCLR recipe scaled to the image size: random resized crop (scale 0.2-1, 0.5-1
    under 32 px), horizontal flip, colour jitter (0.4, 0.4, 0.4, 0.1; p 0.8) and grayscale (p 0.2)
    with 3 channels, Gaussian blur (p 0.5, kernel ~10 % of the size) from 32 px. Works on PIL images
    and on (C, H, W) tensors."""
    from torchvision import transforms as T

    aug: list[Callable] = [T.RandomResizedCrop(size, scale=(0.2 if size >= 32 else 0.5, 1.0), antialias=True), T.RandomHorizontalFlip()]
    if channels == 3:
        aug += [_ColorOnUnitRange(T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)), _ColorOnUnitRange(T.RandomGrayscale(0.2))]
    if size >= 32:
        k = max(3, int(0.1 * size) // 2 * 2 + 1)
        aug.append(T.RandomApply([T.GaussianBlur(k, sigma=(0.1, 2.0))], p=0.5))
    return aug


def two_view_datasets(datasets: Datasets, cfg: DataConfig) -> Datasets:
    """The training set served as ``((view1, view2), y)``; with ``augment=False`` both views are the
    image itself (NASiam's no-augmentation ablation). The test set is left as it is."""
    import dataclasses

    from torchvision import transforms as T

    shape = datasets.task.input_shape
    train = datasets.train
    aug = ssl_augmentation(shape[-1], shape[0]) if cfg.augment else []
    if cfg.name in _TORCHVISION and hasattr(train, "transform"):  # PIL images: augment, then normalise
        _, mean, std = _TORCHVISION[cfg.name]
        train.transform = TwoViews(T.Compose(aug + [T.ToTensor(), T.Normalize(mean, std)]))
    else:  # tensors (digits, synthetic, image folders)
        train = TransformDataset(train, TwoViews(T.Compose(aug)))
    return Datasets(train, datasets.test, dataclasses.replace(datasets.task, two_views=True))

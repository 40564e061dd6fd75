"""Data a user brings: image folders in either layout, with the odd file a real folder holds."""
import pytest
import yaml
from PIL import Image

from dnas.engine.data import DataConfig, load_datasets
from dnas.errors import DnasError


def _images(root, classes=("cat", "dog"), n=3):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            img = Image.new("RGB", (20 + 7 * i, 30), (40 * i, 90, 200))
            img = img.convert("L") if i == 1 else img.convert("RGBA") if i == 2 else img  # grey and RGBA photos too
            img.save(root / c / f"{i}.png")
    (root / classes[0] / "notes.txt").write_text("not an image")


def test_train_and_val_folders_load_at_the_asked_side(tmp_path):
    _images(tmp_path / "train")
    _images(tmp_path / "val", n=2)
    d = load_datasets(DataConfig(name=f"imagefolder:{tmp_path}", image_size=16))
    assert d.task.input_shape == (3, 16, 16) and d.task.num_classes == 2
    assert len(d.train) == 6 and len(d.test) == 4  # the text file is no sample
    x, y = d.train[4]
    assert x.shape == (3, 16, 16) and y == 1


def test_one_folder_is_split_four_to_one(tmp_path):
    _images(tmp_path / "all", n=5)
    d = load_datasets(DataConfig(name=f"imagefolder:{tmp_path / 'all'}", image_size=8))
    assert (len(d.train), len(d.test), d.task.num_classes) == (8, 2, 2)


@pytest.mark.parametrize("layout, says", [
    ({"train": ("a", "b")}, "has train/ but neither val/ nor test/ beside it"),
    ({"train": ("a", "b"), "test": ("a", "c")}, r"train/ and test/ hold other classes \(a, b vs a, c\)"),
    ({"": ()}, "expected one sub-folder of images per class"),
])
def test_a_folder_that_does_not_fit_is_one_line(tmp_path, layout, says):
    for sub, classes in layout.items():
        (tmp_path / "d" / sub).mkdir(parents=True, exist_ok=True)
        if classes:
            _images(tmp_path / "d" / sub, classes, n=1)
    with pytest.raises(DnasError, match=says):
        load_datasets(DataConfig(name=f"imagefolder:{tmp_path / 'd'}"))


@pytest.mark.parametrize("command", [
    ["search", "--space", "darts", "--strategy", "darts"],
    ["search", "--space", "nasiam-mlp", "--strategy", "darts"],
    ["train", "--genotype", "resnet18"],
    ["train", "--genotype", "simsiam"],
])
def test_an_image_space_on_a_table_is_one_line_before_any_work(tmp_path, capsys, command):
    from dnas.cli import main

    (tmp_path / "t.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    assert main(command + ["--data", f"csv:{tmp_path / 't.csv'}", "--out", str(tmp_path / "o")]) == 2
    assert "builds networks on images (C, H, W); this data gives inputs of shape (2,)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_compare_refuses_genotypes_of_two_spaces(tmp_path):
    import dnas

    with pytest.raises(DnasError, match=r"come from 2 spaces \(ddarts, nasiam-mlp\); compare genotypes of one space at a time"):
        dnas.compare({"data": {"name": "digits"}}, genotypes=["resnet18", "simsiam"], out=tmp_path / "c", log=lambda *_: None)
    assert not (tmp_path / "c").exists()


def test_a_registered_dataset_reaches_search_train_and_resume_through_a_plugin(tmp_path, capsys):
    """The user's own Dataset class (no `targets`, no `classes`) and a regression TensorDataset, registered in a
    plugin module: the task is read from the data, and search, --resume and train take the name."""
    import json

    from dnas.cli import main

    main(["--plugin", "userdata", "list"])
    assert "user-blobs" in capsys.readouterr().out.splitlines()[-1]
    d = load_datasets(DataConfig(name="user-blobs"))
    assert d.task.input_shape == (1, 10, 10) and d.task.num_classes == 3 and len(d.train) == 240
    r = load_datasets(DataConfig(name="user-table"))
    assert r.task.input_shape == (5,) and r.task.num_classes == 0 and r.task.out_dim == 1
    args = ["--plugin", "userdata", "search", "--space", "darts", "--strategy", "darts", "--data", "user-blobs", "--epochs", "2",
            "--set", "space.C=4", "--set", "space.layers=3", "--set", "space.nodes=2", "--no-progress", "--out", str(tmp_path / "s")]
    assert main(args) == 0
    lines = (tmp_path / "s" / "history.jsonl").read_text().splitlines()
    (tmp_path / "s" / "genotype.yaml").unlink()
    (tmp_path / "s" / "history.jsonl").write_text(lines[0] + "\n")  # as if stopped after epoch 1
    (tmp_path / "s" / "checkpoint.prev.pt").replace(tmp_path / "s" / "checkpoint.pt")  # the checkpoint of epoch 1
    assert main(["--plugin", "userdata", "search", "--resume", str(tmp_path / "s"), "--no-progress"]) == 0
    assert len((tmp_path / "s" / "history.jsonl").read_text().splitlines()) == 2
    assert main(["--plugin", "userdata", "train", "--genotype", str(tmp_path / "s"), "--data", "user-blobs", "--epochs", "1",
                 "--out", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["task"]["num_classes"] == 3
    capsys.readouterr()
    assert main(["train", "--genotype", str(tmp_path / "s"), "--data", "user-blobz", "--out", str(tmp_path / "u")]) == 2
    assert "unknown dataset 'user-blobz' (did you mean 'user-blobs'?)" in capsys.readouterr().err


def test_torch_datasets_given_in_python_reach_search_resume_and_train(tmp_path):
    """dnas.search/train take (train, test) torch datasets directly: config.yaml records python:<class>, a resume
    asks for them again and, given them, ends on the α of the uninterrupted search."""
    import torch
    from torch.utils.data import TensorDataset

    import dnas

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (160,), generator=g)
    x = torch.randn(160, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1)
    data = (TensorDataset(x[:120], y[:120]), TensorDataset(x[120:], y[120:]))
    kw = {"space_config": {"C": 4, "layers": 3, "nodes": 2}, "strategy_config": {"epochs": 2}, "progress": False}
    s = tmp_path / "s"
    res = dnas.search("darts", "darts", data, out=s, **kw)
    assert yaml.safe_load((s / "config.yaml").read_text())["data"]["name"] == "python:TensorDataset"
    whole = torch.load(s / "alphas.pt")
    lines = (s / "history.jsonl").read_text().splitlines()
    (s / "genotype.yaml").unlink()
    (s / "history.jsonl").write_text(lines[0] + "\n")  # as if stopped after epoch 1
    (s / "checkpoint.prev.pt").replace(s / "checkpoint.pt")
    with pytest.raises(DnasError, match=r"data were torch datasets given in Python \(python:TensorDataset\); pass them again"):
        dnas.search(resume=s, progress=False)
    resumed = dnas.search(resume=s, data=data, progress=False)
    assert resumed.genotype == res.genotype and len(resumed.history) == 2
    assert all(torch.equal(whole[k], v) for k, v in torch.load(s / "alphas.pt").items())
    class Stop(Exception):
        pass

    def stop_in_epoch_2(line):
        if line.startswith("epoch 2/"):
            raise Stop

    with pytest.raises(Stop):
        dnas.train(res.genotype, data=data, train_config={"epochs": 2, "batch_size": 64}, out=tmp_path / "t", log=stop_in_epoch_2)
    with pytest.raises(DnasError, match="pass them again through the API"):
        dnas.train(resume=tmp_path / "t", log=lambda s: None)
    m = dnas.train(resume=tmp_path / "t", data=data, log=lambda s: None)
    assert m["task"]["num_classes"] == 3 and m["task"]["input_shape"] == [1, 8, 8] and [h["epoch"] for h in m["history"]] == [1, 2]
    with pytest.raises(DnasError, match=r"give the train and test sets as a pair, data=\(train, test\)"):
        dnas.search("darts", "darts", data[0], out=tmp_path / "one", **kw)
    with pytest.raises(DnasError, match="data must be a dataset name or torch datasets \\(train, test\\), not ndarray"):
        dnas.train(res.genotype, data=x.numpy())
    dnas.search("darts", "darts", "digits", out=tmp_path / "named", **{**kw, "strategy_config": {"epochs": 1}})
    with pytest.raises(DnasError, match="searched 'digits'; resume it without data="):
        dnas.search(resume=tmp_path / "named", data=data)
    assert not (tmp_path / "one").exists()


def test_a_registered_dataset_is_checked_in_one_line():
    import torch
    from PIL import Image
    from torch.utils.data import TensorDataset

    import dnas
    from dnas.engine.data import infer_task

    with pytest.raises(DnasError, match="'cifar10' is a built-in name"):
        dnas.register_dataset("cifar10")
    with pytest.raises(DnasError, match="'imagefolder:x' is a built-in name"):
        dnas.register_dataset("imagefolder:x")
    dnas.register_dataset("user-bad-type")(lambda: [1, 2, 3])
    with pytest.raises(DnasError, match="must return Datasets\\(train, test, Task\\) or a \\(train, test\\) pair .*not list"):
        load_datasets(DataConfig(name="user-bad-type"))
    dnas.register_dataset("user-raises")(lambda cfg: 1 / 0)
    with pytest.raises(DnasError, match="dataset 'user-raises': its function failed: ZeroDivisionError: division by zero"):
        load_datasets(DataConfig(name="user-raises"))

    class Pil(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return Image.new("RGB", (4, 4)), 0

    with pytest.raises(DnasError, match="inputs must be tensors, got Image \\(add a ToTensor transform\\)"):
        infer_task("p", Pil(), Pil())
    x = torch.zeros(4, 2)
    with pytest.raises(DnasError, match="the test set has label 5, above the train set's largest \\(1\\)"):
        infer_task("t", TensorDataset(x, torch.tensor([0, 1, 0, 1])), TensorDataset(x, torch.tensor([0, 5, 0, 1])))
    with pytest.raises(DnasError, match="its test set is empty"):
        infer_task("e", TensorDataset(x, torch.zeros(4, dtype=torch.long)), TensorDataset(x[:0], torch.zeros(0, dtype=torch.long)))

"""Data a user brings: image folders in either layout, with the odd file a real folder holds."""
import pytest
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

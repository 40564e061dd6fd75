"""The evaluation phase: train a genotype's network (supervised, SSL + linear evaluation, or a pruned
model's fine-tuning)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from dnas.config import make_config
from dnas.engine.data import DataConfig
from dnas.genotype import Genotype, load_genotype
from dnas.registry import create_space


def genotype_space_data(genotype, data, space_config=None, data_config=None):
    """The genotype (loaded if a path or name), its space with ``space_config`` overrides, and the
    data config: the setup every evaluation phase (``train``, ``ssl_train``) starts from. ``data``: a
    name, or torch datasets given in Python (recorded as ``python:<class>``)."""
    from dnas.engine.data import data_name

    g = genotype if isinstance(genotype, Genotype) else load_genotype(genotype)
    dcfg = make_config(DataConfig, {"name": data_name(data), **(data_config or {})}, "data")
    space = create_space(g.space, **{**dict(g.config), **(space_config or {})})
    return g, space, dcfg


#: the evaluations ``train`` picks from (``SearchSpace.evaluation``)
EVALUATIONS = ("supervised", "ssl", "pruned")


def unfinished_training(folder) -> bool:
    """``folder`` holds a dnas training stopped before its end: a checkpoint beside the genotype a
    training writes first (a search writes its genotype, and ``alphas.pt``, at its end), no metrics."""
    folder = Path(folder)
    return ((folder / "checkpoint.pt").exists() and (folder / "genotype.yaml").exists()
            and not (folder / "alphas.pt").exists() and not (folder / "metrics.json").exists())


@contextmanager
def training_run(out, genotype: Genotype, space, data_config, train_config, seed: int, device: str, loggers=None,
                 resume: bool = False):
    """The folder of a training as a :class:`dnas.engine.run.Run` (``None`` without ``out``): a new
    one gets ``genotype.yaml`` and ``config.yaml`` (space, data, train, seed, device, loggers) first
    (an earlier training's files there become ``*.previous``); its ``loggers`` mirror
    ``history.jsonl``. A folder that holds a checkpoint is refused unless ``resume``."""
    import yaml

    from dnas._io import atomic_write_text
    from dnas.config import config_dict
    from dnas.engine.loggers import make_loggers
    from dnas.engine.run import Run
    from dnas.errors import DnasError

    if out is None:
        yield None
        return
    out = Path(out)
    if not resume and unfinished_training(out):
        raise DnasError(f"'{out}' holds an unfinished training; continue it with dnas train --resume {out} "
                        f"(resume=...), or choose another out")
    if not resume and (out / "checkpoint.pt").exists():
        raise DnasError(f"'{out}' holds a search's checkpoint, which this training would overwrite; choose another out")
    config = {"space": {"name": space.name, **space.config_dict()}, "data": config_dict(data_config),
              "train": config_dict(train_config), "seed": seed, "device": device, "loggers": list(loggers or [])}
    with Run(out, progress=False) as run:
        if not resume:
            for name in ("history.jsonl", "config.yaml", "metrics.json", "model.safetensors"):  # an earlier training's
                if (out / name).exists():  # (the API trains into any folder; the CLI refuses these): kept aside
                    os.replace(out / name, out / f"{name}.previous")
            genotype.save(out / "genotype.yaml")
            atomic_write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        run.loggers = make_loggers(loggers, out, config)
        yield run


def finish_training(out, state_dict: dict, result: dict) -> None:
    """A finished training's ``model.safetensors`` and ``metrics.json``; its checkpoints go (the weights are saved)."""
    import json

    from safetensors.torch import save_file

    from dnas._io import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(out / "model.safetensors"))
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=1))
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (out / name).unlink(missing_ok=True)


def task_dict(task) -> dict:
    """A Task as plain data (``metrics.json``)."""
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(task).items()}


def load_trained(directory):
    """The network ``dnas train`` trained (supervised or SSL), rebuilt from its ``--out`` folder:
    the genotype, the space options it was trained with (``config.yaml``, e.g. C = 36, 20 cells),
    the task it was trained for and ``model.safetensors``. An ordinary ``nn.Module``, in eval mode.

    Example:
        >>> net = dnas.load_trained("runs/train-genotype")
        >>> logits = net(images)
    """
    import json
    from pathlib import Path

    import yaml
    from safetensors.torch import load_file

    from dnas.errors import DnasError, first_line
    from dnas.space import Task

    d = Path(directory)
    if (d / "pruned.yaml").is_file():
        raise DnasError(f"'{d}' holds a pruned model; load it with dnas.load_pruned")
    missing = [n for n in ("genotype.yaml", "model.safetensors", "metrics.json") if not (d / n).is_file()]
    if missing:
        raise DnasError(f"'{d}' is not a dnas train folder (missing {', '.join(missing)}); pass the --out of dnas train")
    g = load_genotype(d / "genotype.yaml")
    options = dict(g.config)
    if (d / "config.yaml").is_file():  # the supervised evaluation records the space options it trained with
        options = {k: v for k, v in (yaml.safe_load((d / "config.yaml").read_text()).get("space") or {}).items() if k != "name"}
    task = json.loads((d / "metrics.json").read_text()).get("task")
    if task is None:
        raise DnasError(f"'{d}' was trained by an older dnas that did not record the task; train it again, or build "
                        f"space.build_network(genotype, Task(...)) and load model.safetensors yourself")
    model = create_space(g.space, **options).build_network(g, Task(**{**task, "input_shape": tuple(task["input_shape"])}))
    try:
        model.load_state_dict(load_file(str(d / "model.safetensors")))
    except RuntimeError as e:
        raise DnasError(f"the weights in '{d}' do not fit its genotype ({first_line(e, 160)})") from None
    return model.eval()
"""``dnas log``: replay a finished run's ``history.jsonl`` into TensorBoard, MLflow or a CSV file."""
from __future__ import annotations


def add(sub) -> None:
    lg = sub.add_parser("log", help="replay a run's history into tensorboard, mlflow or csv")
    lg.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (holds history.jsonl)")
    lg.add_argument("--to", nargs=2, action="append", required=True, metavar=("LOGGER", "DEST"),
                    help="tensorboard DIR, mlflow URI or csv FILE (repeatable)")
    lg.set_defaults(fn=run)


def run(args) -> int:
    from dnas.engine.loggers import replay

    for name, dest in args.to:
        n = replay(args.run_dir, name, dest)
        print(f"{n} records of {args.run_dir} logged to {name} {dest}")
    return 0


"""The run folder: config, checkpoints (atomic), history (JSONL), final results, and a lock."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import yaml

from dnas._io import atomic_write_text, read_checked, write_checked
from dnas.errors import DnasError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Run:
    """One run folder. Holds a lock while open so two searches never interleave in it.

    With ``writer=False`` (the non-zero ranks of a data-parallel search) it writes and logs nothing.

    Args:
        directory: the run folder (created if missing).
        progress: show progress bars.
        writer: write files (rank 0) or nothing (the other ranks).
        loggers: :class:`dnas.engine.loggers.Logger` objects; each history record appended is
            passed to them too (``history.jsonl`` stays the source of truth).

    Raises:
        DnasError: another live process holds the folder's lock.
    """

    def __init__(self, directory: str | Path, progress: bool = True, writer: bool = True, loggers: list | None = None):
        self.dir = Path(directory)
        self.writer = writer
        self.loggers = list(loggers or []) if writer else []
        self.progress = progress and writer
        self._lock = self.dir / "run.lock"
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False, soft_wrap=True, quiet=not writer)
        if writer:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._acquire()

    # -- lock ---------------------------------------------------------------------------------
    def _acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self._lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self._lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise DnasError(
                        f"run folder '{self.dir}' is in use by process {pid}; wait for it to finish or choose another --out"
                    ) from None
                self._lock.unlink(missing_ok=True)  # stale lock of a dead process
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return

    def close(self) -> None:
        for lg in self.loggers:
            try:
                lg.close()
            except Exception as e:  # a logger never costs the run its results
                warnings.warn(f"logger {lg.name!r} failed to close: {e}", stacklevel=2)
        self.loggers = []
        if self.writer:
            self._lock.unlink(missing_ok=True)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- files --------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.dir / name

    def log(self, message: str) -> None:
        self.console.print(message)

    def start_over(self) -> list[str]:
        """Begin a new run in a folder where an earlier one stopped before its end: its
        ``config.yaml`` and ``history.jsonl`` become ``*.previous`` (replacing older ones), so the
        new history holds only the new run and nothing of the old one is lost. Returns the names moved."""
        moved = []
        if self.writer and self.path("history.jsonl").exists():
            for name in ("history.jsonl", "config.yaml"):
                if self.path(name).exists():
                    os.replace(self.path(name), self.path(name + ".previous"))
                    moved.append(name)
        return moved

    def write_config(self, config: dict[str, Any]) -> None:
        if self.writer:
            atomic_write_text(self.path("config.yaml"), yaml.safe_dump(config, sort_keys=False))

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write ``checkpoint.pt`` (checksummed, atomic); the one before it stays as ``checkpoint.prev.pt``."""
        if not self.writer:
            return
        cur, prev = self.path("checkpoint.pt"), self.path("checkpoint.prev.pt")
        tmp = self.path(".checkpoint.next.pt")
        write_checked(state, tmp)
        if cur.exists():
            os.replace(cur, prev)
        os.replace(tmp, cur)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The newest intact checkpoint: ``checkpoint.pt``, else (with a warning) ``checkpoint.prev.pt``."""
        if not self.writer:
            return None  # rank 0 reads it and broadcasts
        cur, prev = self.path("checkpoint.pt"), self.path("checkpoint.prev.pt")
        if cur.exists():
            try:
                return read_checked(cur)
            except DnasError as e:
                if not prev.exists():
                    raise
                warnings.warn(f"{e}; using the previous checkpoint {prev.name}", stacklevel=2)
                self.log(f"[yellow]warning:[/] {e}; using the previous checkpoint {prev.name}")
        if prev.exists():  # killed between the two renames of save_checkpoint
            return read_checked(prev)
        return None

    # -- a training's state, one checkpoint per epoch (dnas train) ---------------------------------
    def save_training(self, epoch: int, seconds: float, model, optimizer, generator, scheduler=None) -> None:
        """Checkpoint a training after ``epoch`` epochs: weights (and buffers: a MoCo queue), the
        optimizer, the scheduler, the data order's ``generator`` and torch's RNG (augmentation, drop path)."""
        import torch

        self.save_checkpoint({"epoch": epoch, "seconds": seconds, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict() if scheduler is not None else None,
                              "generator": generator.get_state(), "torch_rng": torch.get_rng_state()})

    def restore_training(self, model, optimizer, generator, scheduler=None) -> tuple[int, float]:
        """Load the folder's last training checkpoint into these objects and drop the history of the
        epochs after it; returns (epochs done, seconds spent), (0, 0.0) without a checkpoint."""
        import torch

        state = self.load_checkpoint()
        if state is None:
            return 0, 0.0
        if "optimizer" not in state or "torch_rng" not in state:
            raise DnasError(f"'{self.dir}/checkpoint.pt' is not the checkpoint of a dnas training (a search's?); "
                            f"resume it with the command that wrote it")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.truncate_history(state["epoch"])  # epochs after the checkpoint are run again
        return state["epoch"], state["seconds"]

    def append_history(self, record: dict[str, Any]) -> None:
        """Append one record (an epoch, an iteration or a trial) to ``history.jsonl`` and pass it to
        the run's loggers."""
        if not self.writer:
            return
        with open(self.path("history.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for lg in self.loggers:
            try:
                lg.log(record)
            except Exception as e:  # history.jsonl has the record; a logger's failure only warns
                warnings.warn(f"logger {lg.name!r} failed: {e}", stacklevel=2)
                self.log(f"[yellow]warning:[/] logger {lg.name!r} failed: {e}")

    def history(self) -> list[dict[str, Any]]:
        return read_history(self.dir)

    def truncate_history(self, epochs: int) -> None:
        """Keep the records of the first ``epochs`` epochs (those the checkpoint covers)."""
        if not self.writer:
            return
        kept = [r for r in self.history() if r.get("epoch", 0) <= epochs]
        atomic_write_text(self.path("history.jsonl"), "".join(json.dumps(r) + "\n" for r in kept))


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "history.jsonl"
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a crash
    return out

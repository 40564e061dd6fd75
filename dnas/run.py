"""The run folder: config, checkpoints (atomic), history (JSONL), final results, and a lock."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from dnas.errors import DnasError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def safe_torch_load(path: Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only, never pickled code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DnasError(f"{what} '{path}' not found") from None
    except Exception as e:  # corrupt, truncated, or holding objects weights_only refuses
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DnasError(f"{what} '{path}' cannot be loaded safely ({msg[:160]}); it is corrupt or not a dnas file") from None


MAGIC = b"DNASCKPT1\n"  # then the sha256 of the payload (32 bytes), then torch.save's bytes


def write_checked(obj: Any, path: Path) -> None:
    """``torch.save`` with a checksum header, written atomically: a torn or corrupted file is detectable."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).digest() + payload)


def read_checked(path: Path, what: str = "checkpoint") -> Any:
    """Verify the checksum, then load with ``weights_only=True``; DnasError if anything is off."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DnasError(f"{what} '{path}' cannot be read ({e.strerror})") from None
    head = len(MAGIC) + 32
    if not data.startswith(MAGIC) or len(data) < head or hashlib.sha256(data[head:]).digest() != data[len(MAGIC):head]:
        raise DnasError(f"{what} '{path}' is truncated or corrupt (checksum mismatch)")
    try:
        return torch.load(io.BytesIO(data[head:]), map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DnasError(f"{what} '{path}' cannot be loaded safely ({msg[:160]})") from None


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
    """

    def __init__(self, directory: str | Path, progress: bool = True, writer: bool = True):
        self.dir = Path(directory)
        self.writer = writer
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

    def append_history(self, record: dict[str, Any]) -> None:
        if not self.writer:
            return
        with open(self.path("history.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

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

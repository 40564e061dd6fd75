"""File helpers every layer uses: atomic writes, checksummed checkpoints, loads that run no code."""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml

from dnas.errors import DnasError, first_line


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``3e-4`` and ``1E9`` as floats (YAML 1.2 and Python do; PyYAML's
    YAML 1.1 wants a dot, ``3.0e-4``, and gives the string '3e-4' otherwise)."""


_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, with ``3e-4`` a number (see :class:`_YamlLoader`)."""
    return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader: builds plain data only


def is_file(path: str | Path) -> bool:
    """``Path(path).is_file()``, False where the name cannot be a path at all (too long, e.g. a
    genotype's text given in its place)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def is_dir(path: str | Path) -> bool:
    """``Path(path).is_dir()``, False where the name cannot be a path at all."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


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


def unreadable_because(path: str | Path, error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, in words a user can act on."""
    text = str(error)
    if "Unsupported global" in text:  # torch.save(model): the file pickles classes, not only tensors
        return "it holds pickled Python objects (a whole model or custom classes), not only tensors; " \
               "save model.state_dict() instead and pass that file"
    if str(path).endswith(".safetensors"):
        return "it is not a readable safetensors file; it is corrupt or truncated"
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive (since torch 1.6)
        return "it is neither a torch checkpoint nor a safetensors file (corrupt, truncated or another format)"
    return first_line(error, 160)


def safe_torch_load(path: Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only, never pickled code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DnasError(f"{what} '{path}' not found") from None
    except Exception as e:  # corrupt, truncated, or holding objects weights_only refuses
        raise DnasError(f"{what} '{path}' cannot be loaded safely: {unreadable_because(path, e)}") from None


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
        raise DnasError(f"{what} '{path}' cannot be loaded safely ({first_line(e, 160)})") from None

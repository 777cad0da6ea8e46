"""The sharded checkpoint format, and reading it in one process without a process group.

A multi-process run (``torchrun``) saves its checkpoints in the folder layout of
``lmkit.models.checkpoint`` with one difference: instead of ``model.safetensors`` the weights and
the optimizer state lie in ``sharded/``, written by ``torch.distributed.checkpoint`` (DCP), each
rank its own pieces::

    sharded/.metadata       DCP's index: every tensor's global shape and dtype, and which file
                            holds which slice of it
    sharded/__R_0.distcp    what rank R wrote: its slices of the model ("model.<name>") and of the
                            optimizer state ("optim.state.<name>.exp_avg", ...)

meta.json records which format a checkpoint has (:data:`STATE_FORMAT_KEY`: ``"safetensors"`` or
``"dcp"``; none in older checkpoints, all one-file) and its checksum record covers every file under
``sharded/``. Tensor names are the model's own (the names of model.safetensors), so a
consolidated model is the one a single process would have saved; a tied weight appears under
each of its names and is read once.

What this module owns: recognising the format (:func:`is_sharded`), the tensor shapes from the
index alone (:func:`sharded_shapes`, no tensor read), and :func:`consolidated_state`, the model's
whole weights read from the shards in one process (what ``load_model``, ``lmkit export`` and
``lmkit card`` use). Nothing here runs a pickle: DCP's index is a pickle, read with an unpickler
that builds only DCP's own metadata records (:class:`_IndexUnpickler`), and its non-tensor items
are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmkit.errors import LmkitError

SHARDED_DIR = "sharded"
STATE_FORMAT_KEY = "state_format"  # meta.json: "safetensors" (one file) | "dcp" (sharded/)
MODEL_PREFIX = "model."
OPTIM_PREFIX = "optim."

# The only classes DCP's index may name: its metadata records, torch's size/dtype/layout tokens, paths.
_INDEX_CLASSES: dict[str, frozenset[str]] = {
    "torch.distributed.checkpoint.metadata": frozenset(
        {
            "Metadata",
            "TensorStorageMetadata",
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "TensorProperties",
            "MetadataIndex",
            "StorageMeta",
            "_MEM_FORMAT_ENCODING",
        }
    ),
    "torch.distributed.checkpoint.filesystem": frozenset({"_StorageInfo"}),
    "torch._utils": frozenset({"_get_layout"}),
    "torch.serialization": frozenset({"_get_layout"}),
    "torch": frozenset({"Size"}),
    "pathlib": frozenset({"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath", "Path"}),
    "collections": frozenset({"OrderedDict"}),
}


class _IndexUnpickler(pickle.Unpickler):
    """Reads DCP's ``.metadata`` building nothing but the classes in :data:`_INDEX_CLASSES` (and
    torch dtypes): any other global in the file is refused, so no code in it runs."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if name in _INDEX_CLASSES.get(module, frozenset()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a DCP index")


def _reader_classes() -> tuple[type, type]:
    """(storage reader, load planner): DCP's file reader and default planner with the two places
    they would unpickle freely (the index, non-tensor items) made safe."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, set_element

    class SafeReader(FileSystemReader):  # type: ignore[misc]
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            from torch.distributed.checkpoint.metadata import StorageMeta

            meta = read_index(Path(str(self.path)))
            if getattr(meta, "storage_meta", None) is None:
                meta.storage_meta = StorageMeta()
            meta.storage_meta.load_id = self.load_id
            return meta

    class SafePlanner(DefaultLoadPlanner):  # type: ignore[misc]
        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            obj = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return SafeReader, SafePlanner


def storage_reader(folder: Path) -> Any:
    """A DCP storage reader of ``folder`` (a checkpoint's ``sharded/``) that runs no pickle."""
    return _reader_classes()[0](str(folder))


def load_planner() -> Any:
    """A DCP load planner whose non-tensor items are read with ``torch.load(weights_only=True)``."""
    return _reader_classes()[1]()


def read_index(folder: Path) -> Any:
    """DCP's index (``.metadata``) of ``folder``, read by :class:`_IndexUnpickler`."""
    path = folder / ".metadata"
    try:
        with open(path, "rb") as f:
            return _IndexUnpickler(f).load()
    except FileNotFoundError:
        raise LmkitError(f"{path}: missing; this sharded checkpoint is incomplete") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as e:
        raise LmkitError(f"{path}: not an index torch.distributed.checkpoint wrote ({e}); refused unread") from None


def is_sharded(ckpt: Path) -> bool:
    """Whether checkpoint folder ``ckpt`` holds its weights in ``sharded/`` (and no model.safetensors).
    The folder decides, not meta.json's record: a command that copies a sharded checkpoint's meta.json
    into a one-file checkpoint (quantize, say) leaves the record behind but not the shards."""
    return (ckpt / SHARDED_DIR).is_dir() and not (ckpt / "model.safetensors").is_file()


def sharded_shapes(ckpt: Path) -> dict[str, tuple[int, ...]]:
    """Every model tensor's whole shape, by its model name, from the index alone."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    index = read_index(ckpt / SHARDED_DIR)
    return {
        key.removeprefix(MODEL_PREFIX): tuple(md.size)
        for key, md in index.state_dict_metadata.items()
        if key.startswith(MODEL_PREFIX) and isinstance(md, TensorStorageMetadata)
    }


def tied_aliases(ckpt: Path) -> set[str]:
    """The second names of tied weights (the output head sharing the embedding) in the model of
    ``ckpt``'s config.json, from a model built on PyTorch's meta device: no memory taken."""
    from lmkit.config import model_config_from_dict
    from lmkit.models import build_model

    try:
        raw = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))["model"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LmkitError(f"{ckpt / 'config.json'}: unreadable ({e})") from None
    with torch.device("meta"):
        model = build_model(model_config_from_dict(raw))
    return {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}


def consolidated_state(ckpt: Path, verify: Callable[[Path, str], None] | None = None) -> dict[str, torch.Tensor]:
    """The model's whole tensors read from ``ckpt``'s shards in this process: no process group, no
    optimizer state read, each tied weight once (as model.safetensors holds them). ``verify(ckpt,
    name)`` first checks every file under ``sharded/`` (``lmkit.models.checkpoint.verify_file``).
    Each tensor is allocated at its saved shape and dtype and DCP fills it from the slices every
    rank wrote."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    folder = ckpt / SHARDED_DIR
    if verify is not None:
        for f in sorted(folder.iterdir()) if folder.is_dir() else []:
            verify(ckpt, f"{SHARDED_DIR}/{f.name}")
    index = read_index(folder)
    skip = tied_aliases(ckpt)
    state: dict[str, torch.Tensor] = {}
    for key, md in index.state_dict_metadata.items():
        name = key.removeprefix(MODEL_PREFIX)
        if key.startswith(MODEL_PREFIX) and isinstance(md, TensorStorageMetadata) and name not in skip:
            state[name] = torch.empty(tuple(md.size), dtype=md.properties.dtype)
    if not state:
        raise LmkitError(f"{folder}: holds no model tensors; this sharded checkpoint is incomplete")
    nested = {"model": state}
    try:
        with warnings.catch_warnings():  # DCP warns that it runs without a process group: that is the point
            warnings.simplefilter("ignore")
            dcp.load(nested, storage_reader=storage_reader(folder), planner=load_planner(), no_dist=True)
    except LmkitError:
        raise
    except Exception as e:  # DCP wraps a missing or truncated shard file in its own error types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LmkitError(f"{folder}: cannot read the shards ({first[:300]})") from None
    return nested["model"]


__all__ = [
    "MODEL_PREFIX",
    "OPTIM_PREFIX",
    "SHARDED_DIR",
    "STATE_FORMAT_KEY",
    "consolidated_state",
    "is_sharded",
    "load_planner",
    "read_index",
    "sharded_shapes",
    "storage_reader",
    "tied_aliases",
]

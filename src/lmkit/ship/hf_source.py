"""Where ``lmkit import-hf`` finds a foundation model: a local folder, or a hub name fetched through ``huggingface_hub``.

What this module owns:

- :func:`resolve_hf_source`: ``SOURCE`` (a folder on disk, or a hub repository id such as
  ``HuggingFaceTB/SmolLM2-135M``) to the local folder that holds its ``config.json``, weights and
  tokenizer files, with the :class:`BaseModel` record of where it came from. A hub name goes through
  ``huggingface_hub.snapshot_download``, so its cache (``HF_HOME``/``HF_HUB_CACHE``), token
  (``HF_TOKEN``), offline switch (``HF_HUB_OFFLINE=1``) and mirrors (``HF_ENDPOINT``) all work as they
  do for ``transformers``. Only the files an import reads are fetched: configs, tokenizer files, the
  model card and the safetensors weights, or ``pytorch_model*.bin`` when the repository has no
  safetensors (never both, never TensorFlow/Flax/ONNX/GGUF copies).
- :class:`BaseModel`: the model a checkpoint descends from (hub name or folder, the exact revision,
  its license from the model card), recorded in ``meta.json`` as ``base_model`` by the import and
  carried on by every checkpoint derived from it (continued pre-training, quantize, export, adapt),
  so a card names its base model and license however many steps away it is.

A folder that exists wins over a hub name of the same spelling; a name that is neither says both.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmkit.errors import LmkitError

# What an import reads; everything else in a hub repository is left on the hub.
CONFIG_PATTERNS = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "README.md",
    "LICENSE*",
)
SAFETENSORS_PATTERNS = ("*.safetensors", "model.safetensors.index.json")
BIN_PATTERNS = ("pytorch_model*.bin", "pytorch_model.bin.index.json")
# A hub repository id: "name" or "owner/name" of letters, digits, '-', '_' and '.' (the hub's own rule).
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class BaseModel:
    """The foundation model a checkpoint descends from."""

    name: str  # hub repository id, or the folder's absolute path
    revision: str | None  # the commit imported (a hub snapshot), None for a plain folder
    license: str | None  # the model card's `license:` (None when the card says nothing)
    hub: bool  # fetched by hub name (True) or read from a folder (False)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> BaseModel | None:
        """The ``base_model`` record of a checkpoint's meta.json, or None when it has none."""
        rec = meta.get("base_model")
        if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
            return None
        revision, license = rec.get("revision"), rec.get("license")
        return cls(
            name=rec["name"],
            revision=revision if isinstance(revision, str) else None,
            license=license if isinstance(license, str) else None,
            hub=bool(rec.get("hub")),
        )


def card_license(folder: Path) -> str | None:
    """The ``license`` of the model card (README.md's YAML front matter) in ``folder``, or None."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    from huggingface_hub.repocard import metadata_load

    try:
        meta = metadata_load(readme) or {}
    except Exception:  # noqa: BLE001 - a malformed card only loses its license, never the import
        return None
    value = meta.get("license")
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return str(value) if value else None


def looks_like_repo_id(source: str) -> bool:
    """Whether ``source`` is spelled like a hub repository id (``owner/name`` or ``name``)."""
    return bool(_REPO_ID.match(source)) and ".." not in source and not source.endswith(".")


def resolve_hf_source(source: str | Path, revision: str | None = None) -> tuple[Path, BaseModel]:
    """The local folder of ``source`` (a folder, or a hub name fetched into the hub cache) and its record."""
    path = Path(source)
    if path.is_dir():
        if revision is not None:
            raise LmkitError(f"--revision {revision}: {path} is a local folder (a revision picks a hub commit)")
        return path, BaseModel(name=str(path.resolve()), revision=None, license=card_license(path), hub=False)
    text = str(source)
    if path.exists():
        raise LmkitError(f"{path}: not a folder (give the folder that holds config.json and the weights)")
    if not looks_like_repo_id(text):
        raise LmkitError(f"{text}: no such folder, and not a hub model name (owner/name)")
    folder = _snapshot(text, revision)
    commit = folder.name if _COMMIT.match(folder.name) else revision
    return folder, BaseModel(name=text, revision=commit, license=card_license(folder), hub=True)


def _snapshot(repo_id: str, revision: str | None) -> Path:
    """Fetch the files an import needs into the hub cache; the snapshot folder holding them."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def fetch(patterns: tuple[str, ...]) -> Path:
        # top-level files only: the weights in subfolders are other formats (onnx/, gguf/, ...)
        return Path(
            snapshot_download(repo_id, revision=revision, allow_patterns=list(patterns), ignore_patterns=["*/*"])
        )

    at = f"{repo_id}@{revision}" if revision else repo_id
    try:
        folder = fetch(CONFIG_PATTERNS + SAFETENSORS_PATTERNS)
        if not any(folder.glob("*.safetensors")):
            folder = fetch(BIN_PATTERNS)
    except GatedRepoError:
        raise LmkitError(
            f"{at}: a gated model; accept its terms on the hub, then set HF_TOKEN (or `hf auth login`)"
        ) from None
    except RevisionNotFoundError:
        raise LmkitError(f"{at}: no such revision (a branch, tag or commit of {repo_id})") from None
    except RepositoryNotFoundError:
        raise LmkitError(
            f"{repo_id}: no such folder here, and no such model on the hub (or it is private: set HF_TOKEN)"
        ) from None
    except LocalEntryNotFoundError:
        raise LmkitError(
            f"{at}: no such folder here, and not in the hub cache while offline (HF_HUB_OFFLINE=1 or no "
            "network): fetch it once with network, or give a local folder"
        ) from None
    except HfHubHTTPError as e:
        raise LmkitError(f"{at}: the hub refused the download ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise LmkitError(f"{at}: the download failed ({e})") from None
    if not (folder / "config.json").is_file():
        raise LmkitError(f"{at}: the hub repository has no config.json (not a transformers model)")
    return folder

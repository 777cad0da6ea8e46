"""Flags several commands share: held-out data for a quality check, and skipping checksum checks."""

from __future__ import annotations

import argparse


def add_held_out_flags(p: argparse.ArgumentParser, batches_flag: str, data_what: str) -> None:
    """The held-out data flags that `quantize` and `evaluate` share (lmkit.infer.evaluate.held_out reads them)."""
    p.add_argument("--data", default=None, help=f"{data_what}: a packed shard folder (its val split) or text files")
    p.add_argument("--text-field", default="text", help="JSONL/Parquet field holding the text (with --data)")
    p.add_argument(batches_flag, type=int, default=8, help="held-out batches evaluated (default 8)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per held-out batch (default 8)")


def add_no_verify(p: argparse.ArgumentParser) -> None:
    """``--no-verify`` for a command that loads checkpoints (main() switches the checks off for it)."""
    p.add_argument("--no-verify", action="store_true",
                   help="do not check the checkpoint's files against the SHA-256 checksums in its meta.json "
                        "(faster for large checkpoints; a changed or damaged file then loads silently)")

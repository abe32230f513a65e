"""What a permanent checkpoint holds, by hash. Its manifest.json records the step, the tokens seen, the
corpus fingerprint and each file's size, sha256 and git blob id: the Hub reports a file's sha256 when it is
stored in LFS (weights) and its git blob id otherwise (JSON), so a revision is checked without a download.
No Hub call here (those are in client.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..run_folder import MANIFEST, STATE

UNLISTED = (MANIFEST, STATE)  # the manifest itself, and the state file written after it
WEIGHTS = "model.safetensors"
CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file of a Hub revision as the Hub describes it."""

    size: int
    blob_id: str
    sha256: str | None  # LFS files only


def file_hashes(path: Path) -> dict:
    """A file's size, sha256 and git blob id (sha1 of 'blob <size>\\0' and the content)."""
    size = path.stat().st_size
    sha256, blob = hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha256.update(chunk)
            blob.update(chunk)
    return {"size": size, "sha256": sha256.hexdigest(), "blob_id": blob.hexdigest()}


def write_manifest(folder: Path, step: int, tokens_seen: int, corpus_fingerprint: str | None) -> dict:
    """Hash every file of a checkpoint being written (all but UNLISTED) into its manifest.json."""
    files = {p.relative_to(folder).as_posix(): file_hashes(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name not in UNLISTED}
    manifest = {"step": step, "tokens_seen": tokens_seen, "corpus_fingerprint": corpus_fingerprint, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def weights_hash(manifest: dict) -> str | None:
    """The sha256 of the checkpoint's weights."""
    return manifest["files"].get(WEIGHTS, {}).get("sha256")


def remote_weights_hash(remote: dict[str, RemoteFile]) -> str | None:
    entry = remote.get(WEIGHTS)
    return entry.sha256 if entry else None


def differences(manifest: dict, remote: dict[str, RemoteFile]) -> list[str]:
    """How a revision's files differ from the manifest: missing files and hashes that disagree."""
    out = []
    for name, expected in manifest["files"].items():
        got = remote.get(name)
        if got is None:
            out.append(f"{name} missing")
        elif got.sha256 is not None and got.sha256 != expected["sha256"]:
            out.append(f"{name} sha256 {got.sha256[:12]} (manifest {expected['sha256'][:12]})")
        elif got.sha256 is None and got.blob_id != expected["blob_id"]:
            out.append(f"{name} git blob {got.blob_id[:12]} (manifest {expected['blob_id'][:12]})")
    return out

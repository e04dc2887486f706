"""Build a tiny OCI image layout offline (no network, no daemon) for skopeo to push.

One gzip'd tar layer holding one file, a config whose rootfs.diff_ids names the uncompressed
layer, a manifest naming both, index.json tagging the manifest, and oci-layout.
Each call makes distinct content, so no two images share a blob: tests never depend on what
a blob cache or the registry remembers from an earlier push.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import secrets
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class OciImage:
    """An image in an OCI layout directory; `ref` is what skopeo takes (oci:DIR:TAG)."""

    path: Path
    tag: str
    manifest_digest: str
    layer_digest: str
    config_digest: str
    content: bytes

    @property
    def ref(self) -> str:
        return f"oci:{self.path}:{self.tag}"


def build_image(path: Path, tag: str = "latest", *, content: bytes | None = None) -> OciImage:
    """Write an OCI layout with one single-file layer at `path`; distinct content by default."""
    content = content if content is not None else f"hello {secrets.token_hex(16)}\n".encode()
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    layer_tar = _single_file_tar("hello.txt", content)
    layer = _write_blob(blobs, gzip.compress(layer_tar, mtime=0))
    config = _write_blob(blobs, _json(_config(_digest(layer_tar))))
    manifest = _write_blob(blobs, _json(_manifest(config, layer)))
    index = {
        "schemaVersion": 2,
        "manifests": [{**_descriptor(MANIFEST_TYPE, manifest), "annotations": {REF_NAME: tag}}],
    }
    (path / "index.json").write_bytes(_json(index))
    (path / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    return OciImage(path, tag, manifest[0], layer[0], config[0], content)


def manifest_digest(path: Path, tag: str) -> str:
    """The digest index.json gives the manifest tagged `tag` (e.g. after a skopeo copy)."""
    index = json.loads((path / "index.json").read_text(encoding="utf-8"))
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get(REF_NAME) == tag:
            return str(entry["digest"])
    raise KeyError(f"{path}/index.json has no manifest tagged {tag!r}")


def read_layer_file(path: Path, tag: str) -> bytes:
    """The content of the first file in the image's first layer (to compare after a pull)."""
    blobs = path / "blobs" / "sha256"
    manifest = json.loads(_blob(blobs, manifest_digest(path, tag)))
    layer = gzip.decompress(_blob(blobs, manifest["layers"][0]["digest"]))
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        member = tar.getmembers()[0]
        extracted = tar.extractfile(member)
        assert extracted is not None, f"{member.name} is not a regular file"
        return extracted.read()


def _single_file_tar(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _config(diff_id: str) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }


def _manifest(config: tuple[str, int], layer: tuple[str, int]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": _descriptor(CONFIG_TYPE, config),
        "layers": [_descriptor(LAYER_TYPE, layer)],
    }


def _descriptor(media_type: str, blob: tuple[str, int]) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": blob[0], "size": blob[1]}


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write_blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = _digest(data)
    (blobs / digest.removeprefix("sha256:")).write_bytes(data)
    return digest, len(data)


def _blob(blobs: Path, digest: str) -> bytes:
    return (blobs / digest.removeprefix("sha256:")).read_bytes()

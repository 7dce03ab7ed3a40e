"""Checksummed, atomic downloads and safe tar extraction for the official dataset releases.

``CHECKSUMS`` maps each official file name to its MD5 (the values published with, and used by
every loader of, MNIST, Fashion-MNIST and CIFAR). Tests that serve their own files override
entries with ``monkeypatch.setitem(hyperfree.data.download.CHECKSUMS, name, md5)``.
A download is written to ``<dest>.part-<random>`` in the target folder, hashed while streaming,
and renamed onto ``dest`` only if the hash matches; otherwise the partial file is deleted and
:class:`DataError` is raised, so a bad file is never left behind under the real name.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from ._errors import DataError

__all__ = ["CHECKSUMS", "BASE_URLS", "md5_of", "download_file", "safe_extract_tar"]

BASE_URLS: dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "cifar100": "https://www.cs.toronto.edu/~kriz/",
}

CHECKSUMS: dict[str, str] = {
    # MNIST (LeCun, Cortes, Burges), as mirrored by the PyTorch team
    "mnist/train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "mnist/train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "mnist/t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "mnist/t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    # Fashion-MNIST (Zalando SE), the files of the official S3 bucket
    "fashion-mnist/train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "fashion-mnist/train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "fashion-mnist/t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "fashion-mnist/t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    # CIFAR (Krizhevsky 2009), python versions
    "cifar10/cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar100/cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
}

_CHUNK = 1 << 20


def md5_of(path: Path) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(dataset: str, filename: str, dest_dir: Path, *, mirror: str | None = None,
                  timeout: float = 60.0) -> Path:
    """Fetch ``<base>/<filename>`` into ``dest_dir/filename``, verified against ``CHECKSUMS``.

    ``base`` is ``mirror`` if given, else ``BASE_URLS[dataset]``. Returns the final path.
    """
    key = f"{dataset}/{filename}"
    expected = CHECKSUMS.get(key)
    if expected is None:
        raise DataError(f"no checksum known for {key}; add it to hyperfree.data.download.CHECKSUMS")
    base = mirror if mirror is not None else BASE_URLS[dataset]
    url = base.rstrip("/") + "/" + filename
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / filename
    fd, tmp_name = tempfile.mkstemp(prefix=filename + ".part-", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != expected:
            raise DataError(f"{url}: md5 {h.hexdigest()} != expected {expected}; the file was "
                            "discarded, retry or check the mirror")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as err:
        raise DataError(f"{url}: download failed ({err}); check the network or pass "
                        "mirror=") from err
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse absolute paths, ``..`` components, links and special files."""
    p = PurePosixPath(member.name)
    if p.is_absolute() or ".." in p.parts or member.name.startswith(("/", "\\")):
        raise DataError(f"{archive}: member {member.name!r} escapes the target folder; refusing "
                        "to extract, use the official archive")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: member {member.name!r} is a link or special file; refusing "
                        "to extract, use the official archive")


def safe_extract_tar(archive: Path, target: Path) -> None:
    """Extract ``archive`` into ``target`` after checking every member (nothing is written if any
    member is unsafe); plain files and folders only, no path leaves ``target``."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(m, archive)
            target.mkdir(parents=True, exist_ok=True)
            tar.extractall(target, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{archive}: not a readable tar archive ({err}); delete it and "
                        "download again") from err

"""download=True against a loopback HTTP server (127.0.0.1, port 0) serving files this test
builds in the official formats: checksums are patched into hyperfree.data.download.CHECKSUMS
(monkeypatch.setitem); a good checksum downloads, extracts and loads; a wrong checksum raises
DataError and leaves neither the file nor a partial file; tar members that escape the target
(``../``, absolute paths, symlinks) are refused before anything is extracted.

Run: .venv/bin/python -m pytest -q tests/data/test_data_download.py
"""
from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest
import torch

from _data_formats import md5, tar_gz_of, write_cifar, write_idx_dataset
from hyperfree.data import DataError, load_dataset
from hyperfree.data import download as dl


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    """(served folder, base URL) of a thread-run HTTP server on an ephemeral loopback port."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _serve_mnist(served: Path, monkeypatch) -> dict:
    written = write_idx_dataset(served, seed=7)
    for f in served.glob("*.gz"):
        monkeypatch.setitem(dl.CHECKSUMS, f"mnist/{f.name}", md5(f.read_bytes()))
    return written


def test_mnist_download_with_good_checksums(tmp_path, server, monkeypatch):
    served, url = server
    written = _serve_mnist(served, monkeypatch)
    target = tmp_path / "mnist"
    b = load_dataset("mnist", data_dir=target, download=True, mirror=url)
    assert torch.equal(b.train_x[:, 0], torch.from_numpy(written["train"][0]))
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in served.iterdir())


def test_wrong_checksum_is_refused_and_not_left_behind(tmp_path, server, monkeypatch):
    served, url = server
    _serve_mnist(served, monkeypatch)
    monkeypatch.setitem(dl.CHECKSUMS, "mnist/t10k-images-idx3-ubyte.gz", "0" * 32)
    target = tmp_path / "mnist"
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: md5 .* != expected 0{32}"):
        load_dataset("mnist", data_dir=target, download=True, mirror=url)
    assert not (target / "t10k-images-idx3-ubyte.gz").exists()
    assert not list(target.glob("*.part-*"))
    # a later load without download must not mistake anything for the valid file
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=target)


def test_missing_remote_file_is_a_data_error(tmp_path, server, monkeypatch):
    served, url = server
    _serve_mnist(served, monkeypatch)
    (served / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: download failed"):
        load_dataset("mnist", data_dir=tmp_path / "m", download=True, mirror=url)
    assert not list((tmp_path / "m").glob("*.part-*"))


def test_cifar_download_extracts_and_loads(tmp_path, server, monkeypatch):
    served, url = server
    src = tmp_path / "src"
    written = write_cifar(src, "cifar10", n=3, seed=5)
    archive = tar_gz_of(src / "cifar-10-batches-py", "cifar-10-batches-py")
    (served / "cifar-10-python.tar.gz").write_bytes(archive)
    monkeypatch.setitem(dl.CHECKSUMS, "cifar10/cifar-10-python.tar.gz", md5(archive))
    b = load_dataset("cifar10", data_dir=tmp_path / "c10", download=True, mirror=url)
    assert b.train_x.shape == (15, 3, 32, 32)
    assert b.test_y.tolist() == written["test"][0][b"labels"]


def _tar_with(member: tarfile.TarInfo, payload: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("cifar-10-batches-py/readme")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        tar.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    return buf.getvalue()


def _evil_members() -> dict[str, tarfile.TarInfo]:
    dotdot = tarfile.TarInfo("cifar-10-batches-py/../../escaped")
    dotdot.size = 4
    absolute = tarfile.TarInfo("/tmp/hyperfree-absolute-escape")
    absolute.size = 4
    link = tarfile.TarInfo("cifar-10-batches-py/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return {"dotdot": dotdot, "absolute": absolute, "symlink": link}


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_tar_escaping_members_are_refused(tmp_path, server, monkeypatch, kind):
    served, url = server
    archive = _tar_with(_evil_members()[kind], b"evil")
    (served / "cifar-10-python.tar.gz").write_bytes(archive)
    monkeypatch.setitem(dl.CHECKSUMS, "cifar10/cifar-10-python.tar.gz", md5(archive))
    target = tmp_path / "a" / "b"
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz: member .* refusing"):
        load_dataset("cifar10", data_dir=target, download=True, mirror=url)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "a" / "escaped").exists()
    assert not (target / "cifar-10-batches-py").exists()  # nothing extracted at all


def test_unknown_file_has_no_checksum(tmp_path):
    with pytest.raises(DataError, match="no checksum known"):
        dl.download_file("mnist", "unexpected.gz", tmp_path, mirror="http://127.0.0.1:9/")

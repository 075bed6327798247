"""The explicit download: verified, resumable, and safe against malicious archives (served on 127.0.0.1)."""
from __future__ import annotations

import functools
import http.server
import stat
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import CLASSES, make_dataset

from wbc_utils.data import build_manifest
from wbc_utils.download import download, extract, fetch
from wbc_utils.errors import DataError

TINY_COUNTS = {"TRAIN": {c: 12 for c in CLASSES}, "TEST": {c: 8 for c in CLASSES}}


def _zip_dir(src: Path, dest: Path, prefix: str = "dataset2-master/dataset2-master/") -> Path:
    with zipfile.ZipFile(dest, "w") as z:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                z.write(f, prefix + str(f.relative_to(src)))
    return dest


@pytest.fixture
def good_zip(tmp_path) -> Path:
    root = make_dataset(tmp_path / "src", layout="direct")
    return _zip_dir(root, tmp_path / "good.zip", prefix="dataset2-master/dataset2-master/images/")


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@pytest.fixture
def server(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(d)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield d, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_verify_extract(server, good_zip, tmp_path):
    www, base = server
    (www / "blood.zip").write_bytes(good_zip.read_bytes())
    target = tmp_path / "data" / "blood-cells"
    images = download(target, url=f"{base}/blood.zip", expected=TINY_COUNTS)
    assert images == target / "dataset2-master" / "dataset2-master" / "images"
    m = build_manifest(target)
    assert len(m.split("TRAIN")) == 48
    assert not (target.parent / "blood-cells.zip").exists()
    assert [p.name for p in target.parent.iterdir()] == ["blood-cells"]  # no temporary folder left


def test_partial_download_restarts_cleanly(server, good_zip, tmp_path):
    """SimpleHTTPRequestHandler ignores Range: the partial file must be replaced, not appended to."""
    www, base = server
    (www / "blood.zip").write_bytes(good_zip.read_bytes())
    dest = tmp_path / "blood.zip"
    (tmp_path / "blood.zip.part").write_bytes(b"GARBAGE" * 10)
    fetch(f"{base}/blood.zip", dest)
    assert dest.read_bytes() == good_zip.read_bytes()


def test_wrong_counts_leave_nothing_that_looks_complete(good_zip, tmp_path):
    target = tmp_path / "blood-cells"
    with pytest.raises(DataError, match="TRAIN counts .* differ from the published"):
        extract(good_zip, target)  # the real dataset's counts
    assert not target.exists()
    assert list(tmp_path.glob(".blood-cells.*")) == []


def test_checksum_mismatch(good_zip, tmp_path):
    with pytest.raises(DataError, match="SHA-256 .* does not match"):
        download(tmp_path / "t", archive=good_zip, digest="0" * 64, expected=TINY_COUNTS)


def test_not_a_zip(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(DataError, match="not a valid zip"):
        extract(bad, tmp_path / "t")


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil.txt", "images/../../evil.txt"])
def test_zip_slip_is_refused(tmp_path, name):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("images/TRAIN/ok.txt", "ok")
        f.writestr(name, "pwned")
    with pytest.raises(DataError, match="refusing archive"):
        extract(z, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()


def test_symlink_member_is_refused(tmp_path):
    z = tmp_path / "link.zip"
    info = zipfile.ZipInfo("images/TRAIN/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(z, "w") as f:
        f.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="symbolic link"):
        extract(z, tmp_path / "out")


def test_existing_target_is_not_overwritten(good_zip, tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        extract(good_zip, target, TINY_COUNTS)
    assert (target / "keep.txt").read_text() == "mine"


def test_kaggle_needs_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    with pytest.raises(DataError, match="Kaggle API credentials"):
        download(tmp_path / "t", source="kaggle")


def test_malicious_archive_served_over_http_is_refused(server, tmp_path):
    www, base = server
    with zipfile.ZipFile(www / "evil.zip", "w") as f:
        f.writestr("images/TRAIN/EOSINOPHIL/_0_1.jpeg", "x")
        f.writestr("../../outside.txt", "pwned")
    target = tmp_path / "data" / "blood-cells"
    with pytest.raises(DataError, match="refusing archive"):
        download(target, url=f"{base}/evil.zip", expected=TINY_COUNTS)
    assert not target.exists() and not (tmp_path / "outside.txt").exists()
    assert not list((tmp_path / "data").glob(".blood-cells.*"))


class _RangeServer(http.server.SimpleHTTPRequestHandler):
    """Serves byte ranges (206), as GitHub and Kaggle do; records the ranges asked for."""

    ranges: list = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        rng = self.headers.get("Range")
        _RangeServer.ranges.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
        else:
            self.send_response(200)
            body = data
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_partial_download_resumes_with_a_range_request(good_zip, tmp_path):
    www = tmp_path / "www2"
    www.mkdir()
    payload = good_zip.read_bytes()
    (www / "blood.zip").write_bytes(payload)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_RangeServer, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        dest = tmp_path / "blood.zip"
        (tmp_path / "blood.zip.part").write_bytes(payload[:1000])  # what a cut-off transfer left
        fetch(f"http://127.0.0.1:{httpd.server_address[1]}/blood.zip", dest)
        assert dest.read_bytes() == payload
        assert _RangeServer.ranges == ["bytes=1000-"]  # only the missing part was fetched
    finally:
        httpd.shutdown()

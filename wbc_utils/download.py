"""Fetch the dataset, only when the user asks: ``python -m wbc_utils download``.

Sources:

* ``github`` (default): the dataset's source repository, dhruvp/wbc-classification, as a zip of its master branch;
* ``kaggle``: paultimothymooney/blood-cells through Kaggle's API, with the user's own credentials
  (``KAGGLE_USERNAME``/``KAGGLE_KEY``, or ``~/.kaggle/kaggle.json``);
* ``--url``: any zip of the same dataset (a mirror).

Safety:

* the download goes to ``<target>.zip.part`` and resumes with an HTTP Range request when interrupted;
  a server that ignores the range gets a clean restart;
* the archive is checked (a valid zip, every member's CRC) and, with ``--sha256``, against a known digest
  (neither source publishes a stable one, so there is no default);
* members with absolute paths, ``..`` components, or that are links are refused (zip-slip);
* extraction goes to a temporary folder beside the target; the file counts per split and class are checked
  against the published ones; only then is it renamed to the target. A half-extracted dataset never looks complete.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from . import CLASSES
from .errors import DataError

SOURCES = {
    "github": "https://github.com/dhruvp/wbc-classification/archive/refs/heads/master.zip",
    "kaggle": "https://www.kaggle.com/api/v1/datasets/download/paultimothymooney/blood-cells",
}
#: Published image counts per split and class (the dataset's README).
EXPECTED_COUNTS = {
    "TRAIN": {"EOSINOPHIL": 2497, "LYMPHOCYTE": 2483, "MONOCYTE": 2478, "NEUTROPHIL": 2499},
    "TEST": {"EOSINOPHIL": 623, "LYMPHOCYTE": 620, "MONOCYTE": 620, "NEUTROPHIL": 624},
}
CHUNK = 1 << 20


def _kaggle_auth() -> str:
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if not (user and key):
        cfg = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
        if not cfg.exists():
            raise DataError("the kaggle source needs your Kaggle API credentials: set KAGGLE_USERNAME and KAGGLE_KEY, "
                            f"or put kaggle.json in {cfg.parent} (Kaggle > Settings > Create New Token).")
        d = json.loads(cfg.read_text())
        user, key = d.get("username"), d.get("key")
    return "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()


def fetch(url: str, dest: Path, headers: dict | None = None, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` if a previous try was cut short."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "wbc_utils", **(headers or {})})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # already complete
            os.replace(part, dest)
            return dest
        raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise DataError(f"download of {url} failed: {e.reason}. Check the network, or fetch the archive yourself "
                        f"and pass it with --archive.") from None
    with resp:
        mode = "ab" if have and resp.status == 206 else "wb"  # 200 = the server ignored the range: restart
        with open(part, mode) as f:
            shutil.copyfileobj(resp, f, CHUNK)
    os.replace(part, dest)
    return dest


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's members, or a DataError naming the first unsafe one."""
    members = zf.infolist()
    for m in members:
        name = m.filename.replace("\\", "/")
        p = PurePosixPath(name)
        if name.startswith("/") or p.is_absolute() or (len(name) > 1 and name[1] == ":"):
            raise DataError(f"refusing archive: member {m.filename!r} has an absolute path")
        if ".." in p.parts:
            raise DataError(f"refusing archive: member {m.filename!r} points outside the target folder ('..')")
        if stat.S_ISLNK(m.external_attr >> 16):
            raise DataError(f"refusing archive: member {m.filename!r} is a symbolic link")
    return members


def count_images(images_root: Path) -> dict:
    out = {}
    for split in ("TRAIN", "TEST", "TEST_SIMPLE"):
        d = images_root / split
        if d.is_dir():
            out[split] = {c: sum(1 for f in (d / c).iterdir() if f.suffix.lower() in (".jpeg", ".jpg", ".png"))
                          for c in CLASSES if (d / c).is_dir()}
    return out


def _find_images(root: Path) -> Path:
    for d in [root] + sorted(p for p in root.rglob("*") if p.is_dir() and len(p.relative_to(root).parts) <= 5):
        if (d / "TRAIN").is_dir() and (d / "TEST").is_dir():
            return d
    raise DataError(f"the archive holds no folder with TRAIN and TEST inside (looked under {root})")


def extract(archive: Path, target: Path, expected: dict | None = EXPECTED_COUNTS) -> Path:
    """Safely extract ``archive`` to ``target`` (which must not exist yet); returns the images root inside."""
    if target.exists() and any(target.iterdir()):
        raise DataError(f"{target} already exists and is not empty; remove it or choose another --data-dir.")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DataError(f"{archive} is not a valid zip archive; delete it and download again.") from None
    with zf:
        members = check_members(zf)
        bad = zf.testzip()
        if bad:
            raise DataError(f"{archive} is corrupt (CRC error in {bad}); delete it and download again.")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            for m in members:
                zf.extract(m, tmp)
            images = _find_images(tmp)
            counts = count_images(images)
            if expected:
                for split, per in expected.items():
                    got = counts.get(split, {})
                    if got != per:
                        raise DataError(f"the archive's {split} counts {got} differ from the published {per}; "
                                        f"it is incomplete or not this dataset.")
            if target.exists():
                target.rmdir()
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target / images.relative_to(tmp)


def download(target: Path, source: str = "github", url: str | None = None, archive: Path | None = None,
             digest: str | None = None, expected: dict | None = EXPECTED_COUNTS, keep_archive: bool = False) -> Path:
    """Download (or take ``archive``), verify, and extract the dataset into ``target``."""
    target = Path(target)
    if archive is None:
        if source not in SOURCES and not url:
            raise DataError(f"source={source!r} is not known; valid values: {', '.join(SOURCES)} (or pass --url)")
        url = url or SOURCES[source]
        headers = {"Authorization": _kaggle_auth()} if source == "kaggle" and not url.startswith("http://127.") else {}
        target.parent.mkdir(parents=True, exist_ok=True)
        archive = fetch(url, target.parent / f"{target.name}.zip", headers)
    archive = Path(archive)
    if digest and sha256(archive) != digest.lower():
        raise DataError(f"{archive}: SHA-256 {sha256(archive)} does not match the expected {digest}; "
                        f"delete it and download again.")
    images = extract(archive, target, expected)
    if not keep_archive and archive.name.endswith(".zip") and archive.parent == target.parent:
        archive.unlink()
    return images

"""A lock per run folder, so that two studies (or two cluster workers) never train the same run at once.

The lock is a small JSON file created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and on NFS v3+),
holding its owner's host, process id, start time and a heartbeat that a thread refreshes while the run trains.
A lock is *stale*, and taken over, when its owner is a dead process on this host, or when its heartbeat is older
than ``stale_after`` seconds (an owner on another host, whose process cannot be checked from here). Taking over
renames the stale file away first, so two processes that both find it stale cannot both win.

Why not ``filelock``: its ``FileLock`` relies on ``fcntl.flock``, which is not reliable across machines on
network filesystems, and its ``SoftFileLock`` has no owner or heartbeat to tell a crashed owner from a slow
one; both are what a runs folder shared by cluster workers needs.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from .errors import WBCError

#: Seconds between heartbeats, and the age after which a lock from another host counts as abandoned.
HEARTBEAT_SECONDS = 20.0
STALE_SECONDS = 180.0
#: Set by a study for the processes it starts (papermill kernels): they may train runs whose lock it holds.
OWNER_VARIABLE = "WBC_LOCK_OWNER"


class RunLockedError(WBCError):
    """Another live process holds the lock."""

    def __init__(self, path: Path, owner: dict):
        self.path, self.owner = path, owner
        super().__init__(f"{path.parent} is being trained by {describe(owner)}; it is left to that process "
                         f"(a lock left by a killed process is taken over once it is stale: "
                         f"{STALE_SECONDS:.0f} s without a heartbeat).")


_TOKEN = uuid.uuid4().hex[:8]


def identity() -> str:
    """This process as a lock owner: ``host:pid:token`` (the token tells apart a restarted process that was given
    the same host name and pid, as a container can be)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN}"


def _host_pid(owner: str) -> tuple[str, int | None]:
    parts = str(owner).split(":")
    if len(parts) >= 2 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return parts[0], None


def describe(owner: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return f"{owner.get('owner', '?')} since {since}"


def read_owner(path: Path) -> dict | None:
    """The lock's record; an unreadable or half-written one counts as held since the file's last change (so it
    becomes stale like any other)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        return {"owner": "?", "started": mtime, "heartbeat": mtime}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def is_stale(owner: dict, stale_after: float = STALE_SECONDS, now: float | None = None) -> bool:
    """True when the owner is a dead process on this host, or has not refreshed its heartbeat in time."""
    host, pid = _host_pid(owner.get("owner", ""))
    if host == socket.gethostname() and pid is not None:
        return not _alive(pid)
    return (now or time.time()) - float(owner.get("heartbeat", 0)) > stale_after


class FolderLock:
    """``with FolderLock(path): ...`` holds ``path`` (a lock file) or raises :class:`RunLockedError`.

    ``owner`` defaults to this process; a study's children pass the study's own identity (``WBC_LOCK_OWNER``),
    so the study's lock counts as theirs and is not taken twice.
    """

    def __init__(self, path: str | os.PathLike, owner: str | None = None, stale_after: float = STALE_SECONDS,
                 heartbeat: float = HEARTBEAT_SECONDS):
        self.path = Path(path)
        self.owner = owner or identity()
        self.stale_after, self.interval = stale_after, heartbeat
        self.taken_over: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False

    def _record(self, started: float) -> bytes:
        return json.dumps({"owner": self.owner, "started": started, "heartbeat": time.time()}).encode()

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self._record(time.time()))
        except BaseException:  # never leave an empty lock behind (a full disk, a kill between open and write)
            self.path.unlink(missing_ok=True)
            raise
        return True

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._create():
                self._start()
                return self
            owner = read_owner(self.path)
            if owner is None:
                continue  # released meanwhile: try again
            if owner.get("owner") == self.owner:
                self._held = False  # held by our study: work under it, do not release it
                return self
            if not is_stale(owner, self.stale_after):
                raise RunLockedError(self.path, owner)
            aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
            try:  # only one of the processes that find it stale can rename it away
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue
            moved = read_owner(aside)
            if moved is not None and (moved.get("owner"), moved.get("started")) != \
                    (owner.get("owner"), owner.get("started")):
                # another process broke the stale lock first and we moved its fresh one: put it back
                try:
                    os.link(aside, self.path)
                finally:
                    aside.unlink(missing_ok=True)
                raise RunLockedError(self.path, moved)
            aside.unlink(missing_ok=True)
            self.taken_over = owner
        raise RunLockedError(self.path, read_owner(self.path) or {})

    def _start(self) -> None:
        self._held = True
        self._started = time.time()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"wbc-lock-{self.path.parent.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                cur = json.loads(self.path.read_text())
            except (OSError, ValueError):  # a passing filesystem error (NFS): try again at the next beat
                continue
            if cur.get("owner") != self.owner:
                return  # taken over (we were presumed dead): nothing of ours to refresh
            tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}")
            try:
                tmp.write_bytes(self._record(self._started))
                os.replace(tmp, self.path)
            except OSError:
                tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if not self._held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        cur = read_owner(self.path)
        if cur is not None and cur.get("owner") == self.owner:
            self.path.unlink(missing_ok=True)
        self._held = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

"""Outputs on an object store (``s3://bucket/prefix`` or any fsspec URL): stage locally, upload
each unit as it finishes.

``staged_output(target)`` gives the pipeline a local folder to write into. For a remote target
it first downloads what the target already holds (so a rerun resumes: the run file, the markers
and the finished units' files), then a background thread uploads every finished file as the run
goes, and each unit's marker only after the files it names (``units/NNNNNN.json`` are uploaded
last in every pass), so the remote copy never claims a unit whose files are missing. At the end
(also when the run fails) a last pass uploads what is left; whole-run files (card, summary,
plots, ``data/{split}.jsonl``) are written by finalize and go with it. The last pass also deletes
the remote copies of files this run removed or renamed in the staging folder (finalize renumbers
shards; a redone unit drops its old files), so the remote folder ends equal to the local one;
nothing else is deleted remotely. Temporary files (``*.tmp``) are never uploaded.

Credentials and the endpoint come from the environment as fsspec's S3 file system (s3fs,
extra ``s3``) reads them: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or a profile) and
``AWS_ENDPOINT_URL_S3`` for an S3-compatible server. URLs in messages never carry them.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import fsspec

from rsbuild.dataset.layout import UNITS_DIR
from rsbuild.errors import InputError, MissingExtraError

TMP_MARK = ".tmp"
SYNC_INTERVAL_S = 2.0


def is_fsspec_url(location: str | Path) -> bool:
    """True for an fsspec URL other than a local file (``s3://…``, ``memory://…``): an output or
    input that needs staging. Not `rsbuild.sources.raster_io.is_remote` (hrefs GDAL reads over the network)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def _is_marker(relative: str) -> bool:
    parts = relative.split("/")
    return len(parts) == 2 and parts[0] == UNITS_DIR and parts[1][:6].isdigit() and parts[1].endswith(".json")


class RemoteOutput:
    """A remote output folder and its local staging copy."""

    def __init__(self, url: str, staging: Path) -> None:
        self.url = url.rstrip("/")
        self.staging = staging
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except ImportError as exc:
            raise MissingExtraError(exc.name or "s3fs", "s3", f"writing to {self.url.split('://')[0]}:// URLs") from None
        self._sent: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) uploaded
        self._lock = threading.Lock()

    def pull(self) -> int:
        """Download what the target holds into the staging folder (resume); returns files copied."""
        try:
            found = self.fs.find(self.root, detail=False) if self.fs.exists(self.root) else []
        except OSError as exc:
            raise InputError(f"cannot list {self.url}: {exc}") from None
        count = 0
        for remote_path in found:
            relative = remote_path[len(self.root.rstrip("/")) + 1 :]
            if not relative or relative.endswith(TMP_MARK):
                continue
            local = self.staging / relative
            local.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get(remote_path, str(local))
            stat = local.stat()
            self._sent[relative] = (stat.st_size, stat.st_mtime_ns)
            count += 1
        return count

    def clear(self) -> None:
        """Delete everything under the remote prefix (``--overwrite``)."""
        if self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)
        self._sent.clear()

    def push(self, *, final: bool = False) -> int:
        """Upload new or changed staged files, markers last; returns files uploaded. The ``final``
        pass also deletes remote files the staging folder no longer has (only ones this run knew)."""
        with self._lock:
            pending: list[tuple[str, Path, tuple[int, int]]] = []
            for path in sorted(self.staging.rglob("*")):
                if not path.is_file() or path.name.endswith(TMP_MARK):
                    continue
                relative = path.relative_to(self.staging).as_posix()
                try:
                    stat = path.stat()
                except FileNotFoundError:  # replaced between listing and reading (atomic rename)
                    continue
                state = (stat.st_size, stat.st_mtime_ns)
                if self._sent.get(relative) != state:
                    pending.append((relative, path, state))
            pending.sort(key=lambda entry: _is_marker(entry[0]))  # files first, then the markers naming them
            for relative, path, state in pending:
                self.fs.put_file(str(path), f"{self.root}/{relative}")
                self._sent[relative] = state
            if final:
                for relative in sorted(r for r in self._sent if not (self.staging / r).is_file()):
                    with suppress(FileNotFoundError):  # already gone remotely
                        self.fs.rm_file(f"{self.root}/{relative}")
                    del self._sent[relative]
            return len(pending)


class _Uploader(threading.Thread):
    """Pushes the staging folder every ``interval_s`` until stopped."""

    def __init__(self, remote: RemoteOutput, interval_s: float) -> None:
        super().__init__(name="rsbuild-upload", daemon=True)
        self.remote, self.interval_s = remote, interval_s
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                self.remote.push()
            except Exception as exc:  # reported by the final push, which retries everything
                self.error = exc


@contextmanager
def staged_output(target: str | Path, *, overwrite: bool = False, interval_s: float = SYNC_INTERVAL_S) -> Iterator[Path]:
    """A local folder for ``target``: the folder itself, or a staging copy mirrored to the URL.

    ``overwrite`` (the commands' ``--overwrite``) empties the remote prefix first instead of
    resuming from it, as ``prepare_run`` empties a local folder."""
    if not is_fsspec_url(target):
        yield Path(target)
        return
    staging = Path(tempfile.mkdtemp(prefix="rsbuild-staging-"))
    remote = RemoteOutput(str(target), staging)
    if overwrite:
        remote.clear()
    else:
        remote.pull()
    uploader = _Uploader(remote, interval_s)
    uploader.start()
    try:
        yield staging
    except BaseException:
        uploader.stopping.set()
        uploader.join()
        with suppress(Exception):  # the run's own error is the one to report
            remote.push(final=True)  # keep every finished unit: the rerun resumes from the remote copy
        raise
    uploader.stopping.set()
    uploader.join()
    remote.push(final=True)
    shutil.rmtree(staging, ignore_errors=True)


__all__ = ["RemoteOutput", "is_fsspec_url", "staged_output"]

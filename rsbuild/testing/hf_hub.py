"""A loopback Hugging Face Hub that speaks the requests the real ``huggingface_hub`` and ``datasets``
clients make to publish a dataset repository and to read it back.

Upload (``create_repo``, ``upload_folder``):

- ``POST /api/repos/create``; ``POST /api/validate-yaml`` (the card's front matter).
- ``POST /api/datasets/{repo}/preupload/{rev}``: "lfs" for binary files (a NUL byte in the sample,
  as the Hub decides), "regular" for text, each with the oid of the copy the repo already holds
  (sha256 for LFS, the git blob id for regular files), so the client skips unchanged files.
- ``POST /datasets/{repo}.git/info/lfs/objects/batch`` (git LFS batch API, "basic" transfer): an
  upload action (``PUT /lfs-objects/{oid}`` on the storage host, then ``POST /lfs-verify``) for each
  object the server lacks, no action for the ones it holds, so a rerun re-sends only what is missing.
- ``POST /api/datasets/{repo}/commit/{rev}``: NDJSON header, base64 ``file``s and ``lfsFile``
  pointers to uploaded objects (a pointer to an object never uploaded is refused, as the Hub does).

Download (``hf_hub_download``, ``snapshot_download``, ``HfFileSystem``, ``load_dataset``, or curl):

- ``GET /api/datasets/{repo}`` and ``.../revision/{rev}``: repo info (``sha``, ``siblings``; with
  ``blobs`` their size, blob id and LFS sha256; ``cardData`` from the card's front matter).
- ``GET /api/datasets/{repo}/tree/{rev}[/{path}]``: the tree, one level or ``recursive``, with
  ``lastCommit`` when ``expand``; pages of ``tree_page_size`` (the Hub's 1000, or 50 with
  ``expand``) linked by a ``Link: <…>; rel="next"`` header, which is how the client paginates.
- ``POST /api/datasets/{repo}/paths-info/{rev}`` (form ``paths``, ``expand``): the entries that exist.
- ``HEAD`` / ``GET /datasets/{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit`` and ``ETag`` (git
  blob id) on every answer; a regular file is served here (byte ranges honoured); an LFS file is a
  302 to the storage host with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``, as the Hub
  redirects to its CDN. The storage host (another port, so another origin: the client sends it
  no token) serves ``/lfs-objects/{sha256}`` with byte ranges, like a signed CDN URL.
- Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``), which the client turns into its typed errors.

Revisions are ``main`` or a commit id; every commit keeps its own snapshot. A new repo is empty
(the real Hub adds a ``.gitattributes``).

Xet: huggingface_hub sends "lfs" files through Xet whenever ``hf_xet`` is installed. Without
``xet_cas`` this server speaks no Xet (tests set ``HF_HUB_DISABLE_XET``, and a client that asks for
a Xet token lands in ``unknown``). With ``xet_cas=FOLDER`` it hands out Xet tokens whose CAS is
``local://FOLDER``: hf_xet's own on-disk CAS (``LocalClient``, inside the hf_xet wheel; no CAS
server is installable), so hf_xet chunks, dedups and writes xorbs and shards there and reads them
back, but its HTTP CAS protocol is not exercised. A commit's ``lfsFile`` the server did not receive
through LFS is looked up by sha256 in the CAS's shards and rebuilt with hf_xet (sha256 checked), as
the Hub does; its resolve answers and tree entries then carry ``X-Xet-Hash`` / ``xetHash`` and the
``xet-auth`` link to ``/api/datasets/{repo}/xet-read-token/{rev}``.

Files land in memory. ``tokens`` records the bearer tokens seen (tests assert on them, nothing logs
them); ``requests`` records every request (which host, client address, whether it carried a token);
``proxied`` lists requests for any other host that reached this server as a proxy (a client run
with ``HTTP(S)_PROXY`` pointing here), answered 502; ``uploads`` lists the LFS objects PUT, and
``refuse_uploads`` makes the next PUT of those oids fail (403), which interrupts an upload the way
a lost connection does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from rsbuild.testing.processes import LOOPBACK
from rsbuild.testing.servers import ByteRangeError, parse_byte_range

_REPO = r"([^/]+/[^/]+)"
_PREUPLOAD = re.compile(rf"^/api/datasets/{_REPO}/preupload/([^/?]+)")
_COMMIT = re.compile(rf"^/api/datasets/{_REPO}/commit/([^/?]+)")
_PATHS_INFO = re.compile(rf"^/api/datasets/{_REPO}/paths-info/([^/?]+)$")
_REPO_INFO = re.compile(rf"^/api/datasets/{_REPO}(?:/revision/([^/]+))?$")
_TREE = re.compile(rf"^/api/datasets/{_REPO}/tree/([^/]+)(?:/(.+))?$")
_RESOLVE = re.compile(rf"^/datasets/{_REPO}/resolve/([^/]+)/(.+)$")
_LFS_BATCH = re.compile(rf"^/datasets/{_REPO}\.git/info/lfs/objects/batch$")
_LFS_OBJECT = re.compile(r"^/lfs-objects/([0-9a-f]{64})$")
_XET_TOKEN = re.compile(rf"^/api/datasets/{_REPO}/xet-(read|write)-token/([^/]+)$")
_SHARD_RECORD = 48  # every record of a Xet shard (MDB v2) is 48 bytes
_SHARD_VERIFICATION, _SHARD_METADATA_EXT = 1 << 31, 1 << 30  # file flags: verification entries, sha256 record follow
TREE_PAGE_SIZE, TREE_PAGE_SIZE_EXPANDED = 1000, 50  # the Hub's page sizes


def _front_matter(card: str) -> tuple[dict[str, Any] | None, str | None]:
    """A card's YAML front matter and why it would be refused (None, None without front matter)."""
    import yaml

    if not card.startswith("---\n"):
        return None, None
    try:
        meta = yaml.safe_load(card.split("---\n", 2)[1])
    except yaml.YAMLError as exc:
        return None, f"invalid YAML: {exc}"
    return (meta, None) if isinstance(meta, dict) else (None, "front matter is not a mapping")


def git_oid(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports for a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The git LFS pointer file that git stores in place of ``data``."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n".encode()


def _xet_hex(raw: bytes) -> str:
    """A Xet hash as hf_xet writes it in hex: each 8-byte word of the stored bytes reversed."""
    return b"".join(raw[i:i + 8][::-1] for i in range(0, 32, 8)).hex()


def xet_shard_files(shard: bytes) -> dict[str, tuple[str, int]]:
    """sha256 -> (Xet file hash, size) of every file a Xet shard describes (its file info section)."""
    files: dict[str, tuple[str, int]] = {}
    at = _SHARD_RECORD  # after the shard header
    while at + _SHARD_RECORD <= len(shard) and shard[at:at + 32] != b"\xff" * 32:  # a bookend ends the section
        flags, n = struct.unpack_from("<II", shard, at + 32)
        size = sum(struct.unpack_from("<I", shard, at + _SHARD_RECORD * (1 + i) + 36)[0] for i in range(n))
        after = at + _SHARD_RECORD * (1 + n + (n if flags & _SHARD_VERIFICATION else 0))
        if flags & _SHARD_METADATA_EXT:
            files[_xet_hex(shard[after:after + 32])] = (_xet_hex(shard[at:at + 32]), size)
            after += _SHARD_RECORD
        at = after
    return files


def is_binary(sample: bytes) -> bool:
    """The Hub's rule for the preupload answer: a file whose first bytes hold a NUL goes to LFS."""
    return b"\0" in sample


@dataclass(frozen=True)
class HubRequest:
    """One request one of the two hosts saw: which host, the client's address, whether it carried a token."""

    host: str  # "hub" or "storage"
    method: str
    target: str  # the request target as sent (a path, or an absolute URL when sent as to a proxy)
    client: str
    authorized: bool


@dataclass(frozen=True)
class Snapshot:
    """A repo at one commit: every file, which of them are LFS files, and the commit's title and date."""

    oid: str
    files: dict[str, bytes]
    lfs: frozenset[str]
    title: str
    date: str
    changed: frozenset[str] = field(default=frozenset())
    xet: dict[str, str] = field(default_factory=dict)  # path -> Xet file hash, for files that came through Xet

    def entry(self, path: str, history: list[Snapshot], expand: bool) -> dict[str, Any] | None:
        """The Hub's tree entry for a file or folder, or None when it does not exist."""
        if path in self.files:
            data = self.files[path]
            doc: dict[str, Any] = {"type": "file", "path": path, "size": len(data)}
            if path in self.lfs:
                pointer = lfs_pointer(data)
                doc |= {"oid": git_oid(pointer),
                        "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}}
                if path in self.xet:
                    doc["xetHash"] = self.xet[path]
            else:
                doc["oid"] = git_oid(data)
        elif path in self.folders():
            inside = sorted(f"{p}:{git_oid(d)}" for p, d in self.files.items() if p.startswith(path + "/"))
            doc = {"type": "directory", "path": path, "size": 0, "oid": hashlib.sha1("\n".join(inside).encode()).hexdigest()}
        else:
            return None
        if expand:  # the last commit that changed the path
            upto = next(i for i, s in enumerate(history) if s is self) + 1
            last = next(s for s in reversed(history[:upto]) if path in s.changed or any(p.startswith(path + "/") for p in s.changed))
            doc["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
        return doc

    def folders(self) -> set[str]:
        return {p.rsplit("/", i)[0] for p in self.files for i in range(1, p.count("/") + 1)}

    def listing(self, path: str, recursive: bool) -> list[str] | None:
        """Paths under ``path`` (all, or its direct children), a file's own path, or None when absent."""
        if path in self.files:
            return [path]
        if path and path not in self.folders():
            return None
        prefix = path + "/" if path else ""
        under = sorted(p for p in (*self.files, *self.folders()) if p.startswith(prefix))
        return under if recursive else [p for p in under if "/" not in p[len(prefix):]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class HubServer:
    """The fake Hub and its storage host on 127.0.0.1; ``repos[repo_id][path] = bytes`` after each commit."""

    def __init__(self, xet_cas: Path | None = None) -> None:
        self.xet_cas = xet_cas  # hf_xet's local:// CAS folder, or None: no Xet
        self.xet_hashes: dict[str, str] = {}  # sha256 -> Xet file hash of the files that came through Xet
        self.repos: dict[str, dict[str, bytes]] = {}  # the head of each repo
        self.history: dict[str, list[Snapshot]] = {}
        self.objects: dict[str, bytes] = {}  # LFS storage: sha256 hex -> bytes
        self.uploads: list[str] = []  # sha256 of every LFS object PUT, in arrival order
        self.refuse_uploads: set[str] = set()  # the next PUT of these oids fails once
        self.tokens: set[str] = set()
        self.commits: list[dict[str, Any]] = []  # {"repo", "summary", "paths", "oid"}
        self.requests: list[HubRequest] = []
        self.proxied: list[str] = []  # requests for other hosts (sent here as to a proxy)
        self.unknown: list[str] = []  # requests this server does not speak
        self.tree_page_size = TREE_PAGE_SIZE
        self.tree_page_size_expanded = TREE_PAGE_SIZE_EXPANDED
        self.lock = threading.Lock()
        self._server = _Server((LOOPBACK, 0), _handler(self, "hub"))
        self._storage = _Server((LOOPBACK, 0), _handler(self, "storage"))
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self._server, self._storage)]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    @property
    def storage_url(self) -> str:
        """The storage host (the Hub's CDN), where LFS uploads go and LFS downloads are redirected."""
        return f"http://{LOOPBACK}:{self._storage.server_address[1]}"

    def snapshot(self, repo_id: str, revision: str) -> Snapshot | None:
        """The repo at ``main`` or at a commit id, None when the revision is unknown."""
        history = self.history.get(repo_id, [])
        if revision == "main":
            return history[-1] if history else None
        return next((s for s in history if s.oid == revision), None)

    def from_xet(self, sha256: str) -> bytes | None:
        """The file with this sha256, rebuilt by hf_xet from the CAS (None when no shard names it)."""
        if self.xet_cas is None:
            return None
        import hf_xet

        found = {k: v for shard in sorted(self.xet_cas.rglob("*.mdb")) for k, v in xet_shard_files(shard.read_bytes()).items()}
        if sha256 not in found:
            return None
        xet_hash, size = found[sha256]
        with tempfile.TemporaryDirectory() as tmp:
            target = str(Path(tmp) / "file")
            with hf_xet.XetSession().new_file_download_group(endpoint=f"local://{self.xet_cas}", token="server",
                                                             token_expiry_unix_secs=int(time.time()) + 3600) as group:
                group.start_download_file(hf_xet.XetFileInfo(xet_hash, size), target)
            data = Path(target).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            return None
        with self.lock:
            self.objects[sha256] = data
            self.xet_hashes[sha256] = xet_hash
        return data

    def _commit(self, repo_id: str, files: dict[str, bytes], lfs: set[str], summary: str) -> str:
        with self.lock:
            history = self.history.setdefault(repo_id, [])
            head = history[-1] if history else None
            parent = head.oid if head else ""
            tree = dict(head.files if head else {}) | files
            lfs_paths = (set(head.lfs if head else ()) - set(files)) | lfs
            digest = hashlib.sha1(parent.encode() + json.dumps(sorted((p, hashlib.sha256(d).hexdigest()) for p, d in tree.items())).encode()
                                  + summary.encode())
            date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            xet = {p: self.xet_hashes[h] for p in lfs_paths if (h := hashlib.sha256(tree[p]).hexdigest()) in self.xet_hashes}
            history.append(Snapshot(digest.hexdigest(), tree, frozenset(lfs_paths), summary, date, frozenset(files), xet))
            self.repos[repo_id] = tree
            self.commits.append({"repo": repo_id, "summary": summary, "paths": list(files), "oid": digest.hexdigest()})
            return digest.hexdigest()

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for server in (self._server, self._storage):
            server.shutdown()
            server.server_close()


def _handler(hub: HubServer, host: str) -> type[BaseHTTPRequestHandler]:
    """The request handler of the Hub (``host="hub"``) or of its storage host."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        # ------------------------------------------------------------------ plumbing

        def _reply(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            """``doc`` as JSON with ``headers`` (no body for HEAD)."""
            body = json.dumps(doc).encode()
            self.send_response(status)
            for name, value in {**(headers or {}), "Content-Type": "application/json", "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
            self._reply(status, {"error": message}, {**({"X-Error-Code": code} if code else {}), "X-Error-Message": message,
                                                     **(headers or {})})

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # a streamed PUT
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

        def _seen(self) -> bool:
            """Record the request; False (answered 502) when it is meant for another host."""
            token = self._token()
            with hub.lock:
                hub.requests.append(HubRequest(host, self.command, self.path, self.client_address[0], token is not None))
                if token is not None:
                    hub.tokens.add(token)
            if self.command == "CONNECT" or not self.path.startswith("/"):
                with hub.lock:
                    hub.proxied.append(f"{self.command} {self.path}")
                self.close_connection = True
                self._error(502, None, "this loopback Hub reaches no other host")
                return False
            return True

        def _unknown(self) -> None:
            hub.unknown.append(f"{self.command} {host}{self.path}")
            self._error(404, None, f"unknown endpoint {self.path}")

        def _send_bytes(self, data: bytes, headers: dict[str, str]) -> None:
            """``data`` (or the byte range asked for) with ``headers``; no body for HEAD."""
            first, last, status = 0, len(data) - 1, HTTPStatus.OK
            if (asked := self.headers.get("Range")) is not None:
                try:
                    byte_range = parse_byte_range(asked, len(data))
                except ByteRangeError:
                    self._error(416, None, "range not satisfiable", {"Content-Range": f"bytes */{len(data)}"})
                    return
                if byte_range is not None:
                    (first, last), status = byte_range, HTTPStatus.PARTIAL_CONTENT
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(last - first + 1))
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data[first:last + 1])

        def _snapshot(self, repo_id: str, revision: str) -> Snapshot | None:
            """The snapshot asked for, or None after answering the Hub's 404."""
            if repo_id not in hub.history:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            snapshot = hub.snapshot(repo_id, urllib.parse.unquote(revision))
            if snapshot is None:
                self._error(404, "RevisionNotFound", "Invalid rev id")
            return snapshot

        # ------------------------------------------------------------------ verbs

        def do_CONNECT(self) -> None:  # a tunnel to another host (an https:// URL through the proxy variables)
            self._seen()

        def do_PUT(self) -> None:  # an LFS upload URL (pre-signed on the real Hub: no token)
            body = self._body()
            if not self._seen():
                return
            match = _LFS_OBJECT.match(self.path)
            if host != "storage" or not match:
                self._unknown()
                return
            oid = match.group(1)
            with hub.lock:
                refused = oid in hub.refuse_uploads
                hub.refuse_uploads.discard(oid)
                if not refused and hashlib.sha256(body).hexdigest() == oid:
                    hub.objects[oid] = body
                    hub.uploads.append(oid)
            if refused:
                self._reply(403, {"error": "upload refused (test interruption)"})
            elif oid not in hub.objects:
                self._reply(400, {"error": "content does not match the oid"})
            else:
                self._reply(200, {})

        def do_POST(self) -> None:
            body = self._body()
            if not self._seen():
                return
            if host != "hub":
                self._unknown()
            elif match := _PATHS_INFO.match(self.path):  # a read: no token needed for a public repo
                self._paths_info(match.group(1), match.group(2), urllib.parse.parse_qs(body.decode()))
            elif self._token() is None:
                self._reply(401, {"error": "Invalid credentials"})
            elif self.path.startswith("/api/validate-yaml"):  # the card's front matter, checked like the Hub does
                problem = _front_matter(json.loads(body).get("content", ""))[1]
                self._reply(400 if problem else 200, {"error": problem} if problem else {"warnings": []})
            elif self.path.startswith("/api/repos/create"):
                self._create(json.loads(body))
            elif match := _PREUPLOAD.match(self.path):
                self._preupload(match.group(1), json.loads(body)["files"])
            elif match := _LFS_BATCH.match(self.path):
                self._lfs_batch(json.loads(body))
            elif self.path == "/lfs-verify":
                doc = json.loads(body)
                stored = hub.objects.get(doc["oid"])
                ok = stored is not None and len(stored) == doc["size"]
                self._reply(200 if ok else 404, {} if ok else {"error": "object not found"})
            elif match := _COMMIT.match(self.path):
                self._commit(match.group(1), body)
            else:
                self._unknown()

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            if not self._seen():
                return
            path, _, query = self.path.partition("?")
            params = urllib.parse.parse_qs(query)
            if host == "storage":
                match = _LFS_OBJECT.match(path)
                if match and match.group(1) in hub.objects:
                    self._send_bytes(hub.objects[match.group(1)], {"ETag": f'"{match.group(1)}"', "Content-Type": "application/octet-stream"})
                else:
                    self._unknown()
            elif (match := _XET_TOKEN.match(path)) and hub.xet_cas is not None:
                self._xet_token(write=match.group(2) == "write")
            elif path.startswith("/api/agent-harnesses"):  # the client's agent registry: none here
                self._reply(200, {"standardEnvVars": [], "harnesses": {}})
            elif match := _RESOLVE.match(path):
                self._resolve(match.group(1), match.group(2), urllib.parse.unquote(match.group(3)))
            elif match := _TREE.match(path):
                self._tree(match.group(1), match.group(2), urllib.parse.unquote(match.group(3) or ""), params)
            elif match := _REPO_INFO.match(path):
                self._repo_info(match.group(1), match.group(2) or "main", params)
            else:
                self._unknown()

        # ------------------------------------------------------------------ upload endpoints

        def _create(self, doc: dict[str, Any]) -> None:
            repo_id = f"{doc.get('organization') or 'user'}/{doc['name']}"
            with hub.lock:
                exists = repo_id in hub.history
                if not exists:
                    hub.history[repo_id] = [Snapshot(hashlib.sha1(f"empty {repo_id}".encode()).hexdigest(), {}, frozenset(),
                                                     "initial commit", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"))]
                    hub.repos[repo_id] = {}
            url = f"{hub.url}/datasets/{repo_id}"
            self._reply(409 if exists else 200, {"url": url, "name": repo_id, "error": "exists"} if exists else {"url": url, "name": repo_id})

        def _preupload(self, repo_id: str, files: list[dict[str, Any]]) -> None:
            stored = hub.repos.get(repo_id, {})
            answers = []
            for f in files:
                lfs = is_binary(base64.b64decode(f["sample"]))
                held = stored.get(f["path"])
                oid = None if held is None else (hashlib.sha256(held).hexdigest() if lfs else git_oid(held))
                answers.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
            self._reply(200, {"files": answers, "commitOid": "0" * 40})

        def _lfs_batch(self, doc: dict[str, Any]) -> None:
            objects = []
            for obj in doc["objects"]:
                item = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in hub.objects:
                    item["actions"] = {"upload": {"href": f"{hub.storage_url}/lfs-objects/{obj['oid']}"},
                                       "verify": {"href": f"{hub.url}/lfs-verify"}}
                objects.append(item)
            self._reply(200, {"transfer": "basic", "objects": objects})

        def _commit(self, repo_id: str, body: bytes) -> None:
            files: dict[str, bytes] = {}
            lfs: set[str] = set()
            summary = ""
            for line in body.splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "header":
                    summary = value.get("summary", "")
                elif item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "lfsFile":
                    if value["oid"] not in hub.objects and hub.from_xet(value["oid"]) is None:
                        self._reply(400, {"error": f"LFS object {value['oid']} of {value['path']} was never uploaded"})
                        return
                    files[value["path"]] = hub.objects[value["oid"]]
                    lfs.add(value["path"])
            oid = hub._commit(repo_id, files, lfs, summary)
            self._reply(200, {"success": True, "commitUrl": f"{hub.url}/datasets/{repo_id}/commit/{oid}", "commitOid": oid})

        def _xet_token(self, write: bool) -> None:
            """A Xet token whose CAS is the local folder (in headers and body, as the Hub answers)."""
            if write and self._token() is None:
                self._reply(401, {"error": "Invalid credentials"})
                return
            expiry = int(time.time()) + 3600
            cas, token = f"local://{hub.xet_cas}", f"xet-{'write' if write else 'read'}"
            self._reply(200, {"casUrl": cas, "accessToken": token, "exp": expiry},
                        {"X-Xet-Cas-Url": cas, "X-Xet-Access-Token": token, "X-Xet-Token-Expiration": str(expiry)})

        # ------------------------------------------------------------------ download endpoints

        def _repo_info(self, repo_id: str, revision: str, params: dict[str, list[str]]) -> None:
            snapshot = self._snapshot(repo_id, revision)
            if snapshot is None:
                return
            history = hub.history[repo_id]
            blobs = params.get("blobs", ["false"])[0].lower() == "true"
            siblings = []
            for path in sorted(snapshot.files):
                sibling: dict[str, Any] = {"rfilename": path}
                if blobs and (entry := snapshot.entry(path, history, expand=False)):
                    sibling |= {"size": entry["size"], "blobId": entry["oid"]}
                    if "lfs" in entry:
                        sibling["lfs"] = {"size": entry["lfs"]["size"], "sha256": entry["lfs"]["oid"],
                                          "pointerSize": entry["lfs"]["pointerSize"]}
                siblings.append(sibling)
            card = _front_matter(snapshot.files.get("README.md", b"").decode(errors="replace"))[0]
            self._reply(200, {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": repo_id.split("/")[0],
                "sha": snapshot.oid, "lastModified": snapshot.date, "createdAt": history[0].date, "private": False,
                "gated": False, "disabled": False, "tags": list((card or {}).get("tags", [])), "cardData": card,
                "siblings": siblings,
            })

        def _tree(self, repo_id: str, revision: str, path: str, params: dict[str, list[str]]) -> None:
            snapshot = self._snapshot(repo_id, revision)
            if snapshot is None:
                return
            recursive = params.get("recursive", ["false"])[0].lower() == "true"
            expand = params.get("expand", ["false"])[0].lower() == "true"
            paths = snapshot.listing(path, recursive)
            if paths is None:
                self._error(404, "EntryNotFound", f"{path} does not exist on {revision}", {"X-Repo-Commit": snapshot.oid})
                return
            size = hub.tree_page_size_expanded if expand else hub.tree_page_size
            start = int(params.get("cursor", ["0"])[0])
            page = paths[start:start + size]
            history = hub.history[repo_id]
            link = {}
            if start + size < len(paths):  # the next page, as the Hub links it
                query = urllib.parse.urlencode({**{k: v[0] for k, v in params.items()}, "cursor": start + size})
                link["Link"] = f'<{hub.url}{self.path.partition("?")[0]}?{query}>; rel="next"'
            self._reply(200, [snapshot.entry(p, history, expand) for p in page], link)

        def _paths_info(self, repo_id: str, revision: str, form: dict[str, list[str]]) -> None:
            snapshot = self._snapshot(repo_id, revision)
            if snapshot is None:
                return
            expand = form.get("expand", ["false"])[0].lower() == "true"
            entries = (snapshot.entry(p.strip("/"), hub.history[repo_id], expand) for p in form.get("paths", []))
            self._reply(200, [e for e in entries if e is not None])

        def _resolve(self, repo_id: str, revision: str, path: str) -> None:
            snapshot = self._snapshot(repo_id, revision)
            if snapshot is None:
                return
            commit = {"X-Repo-Commit": snapshot.oid}
            if path not in snapshot.files:
                self._error(404, "EntryNotFound", f"{path} does not exist on {revision}", commit)
                return
            data = snapshot.files[path]
            if path in snapshot.lfs:  # to the storage host, as the Hub redirects to its CDN
                sha256 = hashlib.sha256(data).hexdigest()
                xet = ({"X-Xet-Hash": hub.xet_hashes[sha256],
                        "Link": f'<{hub.url}/api/datasets/{repo_id}/xet-read-token/{snapshot.oid}>; rel="xet-auth"'}
                       if sha256 in hub.xet_hashes else {})
                self.send_response(302)
                for name, value in {**commit, **xet, "ETag": f'"{git_oid(lfs_pointer(data))}"', "X-Linked-Etag": f'"{sha256}"',
                                    "X-Linked-Size": str(len(data)), "Location": f"{hub.storage_url}/lfs-objects/{sha256}",
                                    "Content-Length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()
                return
            self._send_bytes(data, {**commit, "ETag": f'"{git_oid(data)}"', "Content-Type": "application/octet-stream"})

    return Handler


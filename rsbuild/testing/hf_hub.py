"""A loopback Hugging Face Hub that speaks the requests huggingface_hub's ``create_repo`` and
``upload_folder`` make.

- ``POST /api/repos/create``; ``POST /api/validate-yaml`` (the card's front matter);
  ``GET /api/datasets/{repo}/revision/{rev}`` (repo info).
- ``POST /api/datasets/{repo}/preupload/{rev}``: "lfs" for binary files (a NUL byte in the sample,
  as the Hub decides), "regular" for text, each with the oid of the copy the repo already holds
  (sha256 for LFS, the git blob id for regular files), so the client skips unchanged files.
- ``POST /datasets/{repo}.git/info/lfs/objects/batch`` (git LFS batch API, "basic" transfer): an
  upload action (``PUT /lfs-objects/{oid}`` on this server, then ``POST /lfs-verify``) for each object
  the server lacks, no action for the ones it holds, so a rerun re-sends only what is missing.
- ``POST /api/datasets/{repo}/commit/{rev}``: NDJSON header, base64 ``file``s and ``lfsFile``
  pointers to uploaded objects (a pointer to an object never uploaded is refused, as the Hub does).

Xet is not spoken and not advertised: huggingface_hub sends "lfs" files through Xet whenever
``hf_xet`` is installed, so tests set ``HF_HUB_DISABLE_XET`` to make the client use the LFS API.
Files land in memory; ``tokens`` records the bearer tokens seen (tests assert on them, nothing
logs them); ``uploads`` lists the LFS objects PUT, and ``refuse_uploads`` makes the next PUT of
those oids fail (403), which interrupts an upload the way a lost connection does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from rsbuild.testing.processes import send_json

_PREUPLOAD = re.compile(r"^/api/datasets/([^/]+/[^/]+)/preupload/([^/?]+)")
_REVISION = re.compile(r"^/api/datasets/([^/]+/[^/]+)/revision/([^/?]+)")
_COMMIT = re.compile(r"^/api/datasets/([^/]+/[^/]+)/commit/([^/?]+)")
_LFS_BATCH = re.compile(r"^/datasets/([^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_LFS_OBJECT = re.compile(r"^/lfs-objects/([0-9a-f]{64})$")


def _front_matter_problem(card: str) -> str | None:
    """Why a card's YAML front matter would be refused, or None."""
    import yaml

    if not card.startswith("---\n"):
        return None
    try:
        meta = yaml.safe_load(card.split("---\n", 2)[1])
    except yaml.YAMLError as exc:
        return f"invalid YAML: {exc}"
    return None if isinstance(meta, dict) else "front matter is not a mapping"


def git_oid(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports for a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_binary(sample: bytes) -> bool:
    """The Hub's rule for the preupload answer: a file whose first bytes hold a NUL goes to LFS."""
    return b"\0" in sample


class HubServer:
    """The fake Hub on 127.0.0.1; ``repos[repo_id][path] = bytes`` after each commit."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.objects: dict[str, bytes] = {}  # LFS storage: sha256 hex -> bytes
        self.uploads: list[str] = []  # sha256 of every LFS object PUT, in arrival order
        self.refuse_uploads: set[str] = set()  # the next PUT of these oids fails once
        self.tokens: set[str] = set()
        self.commits: list[dict[str, Any]] = []  # {"repo", "summary", "paths"}
        self.unknown: list[str] = []  # requests this server does not speak
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _reply(self, status: int, doc: Any) -> None:
                send_json(self, status, doc)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # a streamed PUT
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _authorized(self) -> bool:
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Bearer "):
                    with hub.lock:
                        hub.tokens.add(auth.removeprefix("Bearer "))
                    return True
                return False

            def do_PUT(self) -> None:  # an LFS upload URL (pre-signed on the real Hub: no token)
                body = self._body()
                match = _LFS_OBJECT.match(self.path)
                if not match:
                    hub.unknown.append(f"PUT {self.path}")
                    self._reply(404, {"error": f"unknown endpoint {self.path}"})
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
                if not self._authorized():
                    self._body()
                    self._reply(401, {"error": "Invalid credentials"})
                    return
                body = self._body()
                if self.path.startswith("/api/validate-yaml"):  # the card's front matter, checked like the Hub does
                    problem = _front_matter_problem(json.loads(body).get("content", ""))
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
                    hub.unknown.append(f"POST {self.path}")
                    self._reply(404, {"error": f"unknown endpoint {self.path}"})

            def _create(self, doc: dict[str, Any]) -> None:
                repo_id = f"{doc.get('organization') or 'user'}/{doc['name']}"
                with hub.lock:
                    exists = repo_id in hub.repos
                    hub.repos.setdefault(repo_id, {})
                url = f"http://{self.headers['Host']}/datasets/{repo_id}"
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
                base = f"http://{self.headers['Host']}"
                objects = []
                for obj in doc["objects"]:
                    item = {"oid": obj["oid"], "size": obj["size"]}
                    if obj["oid"] not in hub.objects:
                        item["actions"] = {"upload": {"href": f"{base}/lfs-objects/{obj['oid']}"},
                                           "verify": {"href": f"{base}/lfs-verify"}}
                    objects.append(item)
                self._reply(200, {"transfer": "basic", "objects": objects})

            def _commit(self, repo_id: str, body: bytes) -> None:
                files: dict[str, bytes] = {}
                summary = ""
                for line in body.splitlines():
                    item = json.loads(line)
                    value = item["value"]
                    if item["key"] == "header":
                        summary = value.get("summary", "")
                    elif item["key"] == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif item["key"] == "lfsFile":
                        if value["oid"] not in hub.objects:
                            self._reply(400, {"error": f"LFS object {value['oid']} of {value['path']} was never uploaded"})
                            return
                        files[value["path"]] = hub.objects[value["oid"]]
                with hub.lock:
                    hub.repos.setdefault(repo_id, {}).update(files)
                    hub.commits.append({"repo": repo_id, "summary": summary, "paths": list(files)})
                    n = len(hub.commits)
                url = f"http://{self.headers['Host']}/datasets/{repo_id}/commit/{n:040d}"
                self._reply(200, {"success": True, "commitUrl": url, "commitOid": f"{n:040d}"})

            def do_GET(self) -> None:
                if self.path.startswith("/api/agent-harnesses"):  # the client's agent registry: none here
                    self._reply(200, {"standardEnvVars": [], "harnesses": {}})
                    return
                if match := _REVISION.match(self.path):  # repo_info: the latest commit
                    with hub.lock:
                        n = sum(1 for c in hub.commits if c["repo"] == match.group(1))
                        siblings = [{"rfilename": path} for path in sorted(hub.repos.get(match.group(1), {}))]
                    self._reply(200, {"id": match.group(1), "sha": f"{n:040d}", "siblings": siblings, "private": False})
                    return
                hub.unknown.append(f"GET {self.path}")
                self._reply(404, {"error": f"unknown endpoint {self.path}"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()

"""A loopback Hugging Face Hub that speaks the requests huggingface_hub's ``create_repo`` and
``upload_folder`` make: ``POST /api/repos/create``, ``POST /api/datasets/{repo}/preupload/{rev}``
(every file "regular", with the git oid of the copy it already holds, so unchanged files are
skipped) and ``POST /api/datasets/{repo}/commit/{rev}`` (NDJSON: header, then base64 files).
Files land in memory; ``tokens`` records the bearer tokens seen (tests assert on them, nothing logs them)."""

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


class HubServer:
    """The fake Hub on 127.0.0.1; ``repos[repo_id][path] = bytes`` after each commit."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
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
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self) -> None:
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer "):
                    self._body()
                    self._reply(401, {"error": "Invalid credentials"})
                    return
                with hub.lock:
                    hub.tokens.add(auth.removeprefix("Bearer "))
                body = self._body()
                if self.path.startswith("/api/validate-yaml"):  # the card's front matter, checked like the Hub does
                    problem = _front_matter_problem(json.loads(body).get("content", ""))
                    self._reply(400 if problem else 200, {"error": problem} if problem else {"warnings": []})
                elif self.path.startswith("/api/repos/create"):
                    doc = json.loads(body)
                    repo_id = f"{doc.get('organization') or 'user'}/{doc['name']}"
                    with hub.lock:
                        exists = repo_id in hub.repos
                        hub.repos.setdefault(repo_id, {})
                    url = f"http://{self.headers['Host']}/datasets/{repo_id}"
                    self._reply(409 if exists else 200, {"url": url, "name": repo_id, "error": "exists"} if exists else {"url": url, "name": repo_id})
                elif match := _PREUPLOAD.match(self.path):
                    stored = hub.repos.get(match.group(1), {})
                    files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                              "oid": git_oid(stored[f["path"]]) if f["path"] in stored else None}
                             for f in json.loads(body)["files"]]
                    self._reply(200, {"files": files, "commitOid": "0" * 40})
                elif match := _COMMIT.match(self.path):
                    repo_id, paths, summary = match.group(1), [], ""
                    with hub.lock:
                        for line in body.splitlines():
                            item = json.loads(line)
                            if item["key"] == "header":
                                summary = item["value"].get("summary", "")
                            elif item["key"] == "file":
                                value = item["value"]
                                hub.repos.setdefault(repo_id, {})[value["path"]] = base64.b64decode(value["content"])
                                paths.append(value["path"])
                        hub.commits.append({"repo": repo_id, "summary": summary, "paths": paths})
                        n = len(hub.commits)
                    url = f"http://{self.headers['Host']}/datasets/{repo_id}/commit/{n:040d}"
                    self._reply(200, {"success": True, "commitUrl": url, "commitOid": f"{n:040d}"})
                else:
                    hub.unknown.append(f"POST {self.path}")
                    self._reply(404, {"error": f"unknown endpoint {self.path}"})

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

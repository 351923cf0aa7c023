"""A minimal Hugging Face Hub on 127.0.0.1: enough HTTP API for ``HfApi.create_repo``,
``HfApi.upload_folder`` and ``snapshot_download`` as huggingface_hub 2.x speaks it.

Repos live in memory. Uploads are answered "regular" at preupload, so every file arrives
base64-inlined in the NDJSON commit (no LFS/Xet storage to fake); downloads answer HEAD and
GET on ``/{repo}/resolve/{rev}/{path}`` with the headers huggingface_hub insists on
(``X-Repo-Commit``, ``ETag``, ``Content-Length``). Errors carry ``X-Error-Code`` so the
client raises its typed exceptions (RepositoryNotFoundError, RevisionNotFoundError, ...).

    with FakeHub(token="hf_write") as hub:
        HfApi(endpoint=hub.url, token="hf_write").create_repo("me/x")
        hub.files("me/x")      # {path: bytes} at main
        hub.log                # [(method, path), ...]
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import unquote, urlsplit

import yaml


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)  # oldest first; each a 40-hex id
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)

    @property
    def head(self) -> Optional[str]:
        return self.commits[-1] if self.commits else None


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self, token: Optional[str] = None) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_commit(self, repo: Repo, files: dict[str, bytes]) -> str:
        """Record ``files`` as the repo's whole tree at a new head commit."""
        with self.lock:
            listing = json.dumps(sorted((p, git_blob_id(d)) for p, d in files.items()))
            commit = hashlib.sha1(f"{listing}#{len(repo.commits)}".encode()).hexdigest()
            repo.files, repo.snapshots[commit] = dict(files), dict(files)
            repo.commits.append(commit)
        return commit

    def seed(self, repo_id: str, files: dict[str, bytes], private: bool = False) -> str:
        """A repo with one commit, without going through the upload API; returns the commit."""
        repo = self.repos.setdefault(repo_id, Repo(private=private))
        return self.add_commit(repo, files)

    def files(self, repo_id: str) -> dict[str, bytes]:
        return dict(self.repos[repo_id].files)

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Error(Exception):
    def __init__(self, status: int, code: Optional[str], message: str, commit: Optional[str] = None,
                 **extra: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.commit, self.extra = status, code, message, commit, extra


def _handler_for(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        # ---------------------------------------------------------------- plumbing

        def _route(self, method: str) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.log.append((method, path))
            body = self._body()
            try:
                status, headers, payload = self._dispatch(method, path, body)
            except _Error as err:
                headers = {"X-Error-Message": err.message}
                if err.code:
                    headers["X-Error-Code"] = err.code
                if err.commit:
                    headers["X-Repo-Commit"] = err.commit
                status, payload = err.status, json.dumps({"error": err.message, **err.extra}).encode()
                headers["Content-Type"] = "application/json"
            headers.setdefault("Content-Length", str(len(payload)))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(payload)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def do_GET(self) -> None:
            self._route("GET")

        def do_HEAD(self) -> None:
            self._route("HEAD")

        def do_POST(self) -> None:
            self._route("POST")

        def _json(self, data, status: int = 200):
            return status, {"Content-Type": "application/json"}, json.dumps(data).encode()

        def _authorised(self) -> bool:
            return hub.token is None or self.headers.get("Authorization") == f"Bearer {hub.token}"

        def _require_write(self) -> None:
            if not self._authorised():
                raise _Error(401, None, "Invalid credentials in Authorization header")

        def _repo(self, repo_id: str) -> Repo:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not self._authorised()):
                raise _Error(404, "RepoNotFound", "Repository not found")
            return repo

        def _snapshot(self, repo: Repo, revision: str) -> tuple[str, dict[str, bytes]]:
            commit = repo.head if revision == "main" else revision
            if commit is None or commit not in repo.snapshots:
                raise _Error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return commit, repo.snapshots[commit]

        # ---------------------------------------------------------------- routes

        def _dispatch(self, method: str, path: str, body: bytes):
            parts = path.strip("/").split("/")
            if method == "POST" and path == "/api/repos/create":
                return self._create(json.loads(body))
            if method == "POST" and path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body))
            if parts[:2] == ["api", "models"] and len(parts) >= 6:
                repo_id, action, revision = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
                if method == "POST" and action == "preupload":
                    return self._preupload(repo_id, json.loads(body))
                if method == "POST" and action == "commit":
                    return self._commit(repo_id, revision, body)
                if method == "GET" and action == "revision":
                    return self._info(repo_id, revision)
                if method == "GET" and action == "tree":
                    return self._tree(repo_id, revision)
            if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
            raise _Error(404, None, f"fake hub: no route for {method} {path}")

        def _create(self, data: dict):
            self._require_write()
            repo_id = f"{data['organization']}/{data['name']}"
            with hub.lock:
                if repo_id in hub.repos:
                    # like the Hub: the body still names the repo, which create_repo(exist_ok=True) reads
                    raise _Error(409, None, "You already created this model repo", url=f"{hub.url}/{repo_id}")
                hub.repos[repo_id] = Repo(private=data.get("visibility") == "private")
            return self._json({"url": f"{hub.url}/{repo_id}"})

        def _validate_yaml(self, data: dict):
            text = data["content"]
            if not text.startswith("---\n"):
                return self._json({"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
            try:
                meta = yaml.safe_load(text.split("---\n")[1])
            except yaml.YAMLError as err:
                return self._json({"errors": [{"message": str(err)}]}, status=400)
            errors = [{"message": f"{key} must be a list"} for key in ("tags",) if not isinstance(meta.get(key), list)]
            return self._json({"errors": errors, "warnings": []}, status=400 if errors else 200)

        def _preupload(self, repo_id: str, data: dict):
            self._require_write()
            self._repo(repo_id)
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                     for f in data["files"]]
            return self._json({"files": files, "commitOid": None})

        def _commit(self, repo_id: str, revision: str, body: bytes):
            self._require_write()
            repo = self._repo(repo_id)
            if revision != "main":
                raise _Error(404, "RevisionNotFound", f"fake hub commits to main only, not {revision}")
            files = dict(repo.files)
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    assert item["value"]["encoding"] == "base64"
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] != "header":
                    raise _Error(400, None, f"fake hub does not implement commit key {item['key']!r}")
            commit = hub.add_commit(repo, files)
            return self._json({"commitUrl": f"{hub.url}/{repo_id}/commit/{commit}", "commitOid": commit,
                               "pullRequestUrl": None})

        def _info(self, repo_id: str, revision: str):
            repo = self._repo(repo_id)
            commit, files = self._snapshot(repo, revision)
            return self._json({"id": repo_id, "sha": commit, "private": repo.private,
                               "siblings": [{"rfilename": p} for p in sorted(files)]})

        def _tree(self, repo_id: str, revision: str):
            repo = self._repo(repo_id)
            _, files = self._snapshot(repo, revision)
            return self._json([{"type": "file", "path": p, "size": len(d), "oid": git_blob_id(d)}
                               for p, d in sorted(files.items())])

        def _resolve(self, repo_id: str, revision: str, filename: str):
            repo = self._repo(repo_id)
            commit, files = self._snapshot(repo, revision)
            if filename not in files:
                raise _Error(404, "EntryNotFound", f"{filename} does not exist", commit=commit)
            data = files[filename]
            headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_id(data)}"',
                       "Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
            return 200, headers, data

    return Handler

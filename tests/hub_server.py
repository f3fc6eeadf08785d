"""A stand-in for the Hugging Face hub on 127.0.0.1: `HEAD`/`GET /{repo}/resolve/{revision}/{file}`,
plus the repo-info and file-tree calls (`GET /api/models/{repo}/revision|tree/{revision}`) of the `hf` CLI.

It sends what huggingface_hub reads from the real hub (`X-Repo-Commit`, `ETag` = quoted sha256,
`Content-Length`) and honours `Range: bytes=N-`. `cut_once` names files whose first GET is cut
off halfway, to exercise the client's resumption.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class FakeHub:
    def __init__(self, files: dict[tuple[str, str], bytes], cut_once: set[str] | None = None) -> None:
        """`files`: {(repo_id, filename): content}, served at every revision."""
        self.files = files
        self.cut_once = set(cut_once or ())
        self.requests: list[tuple[str, str, str | None]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @staticmethod
    def commit(repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                api = re.fullmatch(r"/api/models/(.+?/.+?)/(revision|tree)/([^/]+)", urlsplit(self.path).path)
                if api:
                    self._api(unquote(api[1]), api[2])
                    return
                match = re.fullmatch(r"/(.+?/.+?)/resolve/([^/]+)/(.+)", urlsplit(self.path).path)
                repo, filename = (unquote(match[1]), unquote(match[3])) if match else ("", "")
                content = hub.files.get((repo, filename))
                if content is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if ranged and body:
                    start = int(ranged[1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
                else:
                    self.send_response(200)
                self.send_header("X-Repo-Commit", hub.commit(repo))
                self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(content) - start))
                self.end_headers()
                if not body:
                    return
                if filename in hub.cut_once and start == 0:
                    hub.cut_once.discard(filename)
                    self.wfile.write(content[: len(content) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(content[start:])

            def _api(self, repo: str, what: str) -> None:
                """What `hf download REPO FILE FILE` asks first: the commit, then the file tree."""
                files = {name: data for (owner, name), data in hub.files.items() if owner == repo}
                tree = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest(),
                         "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}}
                        for name, data in files.items()]
                info = {"id": repo, "sha": hub.commit(repo), "siblings": [{"rfilename": name} for name in files]}
                body = json.dumps(info if what == "revision" else tree).encode()
                self.send_response(200 if files else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

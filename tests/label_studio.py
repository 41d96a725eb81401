"""A real Label Studio server for the Label Studio door's tests: ``label-studio start`` from its own environment
(``FN_LABEL_STUDIO``, set by ``tools/fn test``), SQLite in a temporary folder, a user with a legacy API token,
on a free local port; and the calls a test makes to it (through label-studio-sdk's client where it returns what
the server answered, plain HTTP where it does not)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import http
from tools.redis_server import free_port

START_TIMEOUT = 240  # the first start migrates its SQLite database (about 45 s here)


class LabelStudio:
    """One running server: ``url``, ``token`` (a legacy API token), ``client`` (label-studio-sdk's)."""

    def __init__(self, folder: Path):
        executable = os.environ.get("FN_LABEL_STUDIO")
        if not executable or not Path(executable).exists():
            pytest.fail("FN_LABEL_STUDIO is not set to a label-studio executable: run the tests with `tools/fn test`, "
                        "which sets up .venv-label-studio")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(20)
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(folder), "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
               # our functions listen on 127.0.0.1, which Label Studio refuses as a backend unless told otherwise
               "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
               "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "false", "PYTHONUNBUFFERED": "1"}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.log = open(folder / "label-studio.log", "wb")
        self.process = subprocess.Popen(
            [executable, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
             "--username", "tests@example.com", "--password", secrets.token_hex(8), "--user-token", self.token,
             "--enable-legacy-api-token"],
            cwd=folder, env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.folder = folder
        self.wait()
        from label_studio_sdk import LabelStudio as Client

        self.client = Client(base_url=self.url, api_key=self.token)

    def wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"label-studio stopped at start (exit {self.process.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1)
        self.stop()
        pytest.fail(f"label-studio did not answer on port {self.port} within {START_TIMEOUT} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join((self.folder / "label-studio.log").read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    # ------------------------------------------------------------ calls

    def api(self, method: str, path: str, body=None, status: int | tuple = 200, timeout: float = 200):
        """A REST call with the token; the parsed reply (asserting its status)."""
        code, _, reply = http(method, self.url + path, body, {"Authorization": f"Token {self.token}"}, timeout)
        assert code in ((status,) if isinstance(status, int) else status), (code, reply, self.tail(15))
        return reply

    def personal_token(self) -> str:
        """The user's personal access token (a JWT refresh token; one per user, made on first use)."""
        if not hasattr(self, "_personal"):
            self._personal = self.api("POST", "/api/token/", {}, status=(200, 201))["token"]
        return self._personal

    def project(self, config: str) -> int:
        return self.client.projects.create(title=f"fn-{uuid.uuid4().hex[:8]}", label_config=config).id

    def upload(self, project: int, *files: Path) -> list[int]:
        """Import image files as Label Studio's upload does (one multipart field per file); the new task ids."""
        boundary = uuid.uuid4().hex
        body = b""
        for i, path in enumerate(files):
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file{i}\"; filename=\"{path.name}\"\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        request = urllib.request.Request(f"{self.url}/api/projects/{project}/import?commit_to_project=true", data=body,
                                         method="POST", headers={"Authorization": f"Token {self.token}",
                                                                 "Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=60) as reply:
            json.loads(reply.read())
        return [task.id for task in self.client.tasks.list(project=project)]

    def connect(self, project: int, url: str, interactive: bool = False, auth: tuple[str, str] | None = None) -> int:
        """The function at ``url`` as the project's ML backend (Project → Settings → Model → Connect model)."""
        extra = {"auth_method": "BASIC_AUTH", "basic_auth_user": auth[0], "basic_auth_pass": auth[1]} if auth else {}
        return self.api("POST", "/api/ml", {"project": project, "url": url, "title": "fn", "is_interactive": interactive,
                                            **extra}, status=201)["id"]

    def retrieve(self, project: int, tasks: list[int]) -> None:
        """The Data Manager's "Retrieve predictions" action on ``tasks``."""
        self.api("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
                 {"selectedItems": {"all": False, "included": tasks}})

    def predictions(self, task: int) -> list[dict]:
        """What Label Studio stored for a task (GET /api/predictions?task=ID)."""
        return self.api("GET", f"/api/predictions?task={task}")

    def interactive(self, backend: int, task: int, context: dict) -> dict:
        """The editor's smart-tool call (POST /api/ml/<id>/interactive-annotating); Label Studio's answer."""
        return self.api("POST", f"/api/ml/{backend}/interactive-annotating", {"task": task, "context": context})

"""Downloading world checkpoints through huggingface_hub from a local stand-in hub, and the
one-line error (with the exact fetch command) when offline."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import random
import shlex
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest
import yaml
from huggingface_hub import constants

from engine.checkpoints.download import hub_cli
from tests.conftest import PROJECT_ROOT, read_json
from tests.hub_server import FakeHub

REPO = "test-org/tiny-oasis"
WORLD = "hub-test"
FILES = {"dit": "dit.safetensors", "vae": "vae.safetensors"}

RESOLVE_SCRIPT = """
import json, sys
from pathlib import Path
from engine.checkpoints.resolve import resolve_checkpoint_files
from engine.errors import CheckpointError
from engine.core.config import load_world_config
try:
    files = resolve_checkpoint_files(load_world_config(sys.argv[1]), project_root=Path(sys.argv[2]))
except CheckpointError as exc:
    print(exc)
    sys.exit(3)
print(json.dumps({role: str(path) for role, path in files.items()}))
"""

DOWNLOAD_SCRIPT = """
import sys
import termios
import threading
import time
from pathlib import Path
from engine.checkpoints.download import download_files
print(download_files(sys.argv[1], {"blob": sys.argv[2]}, world="test", local_dir=Path("."))["blob"])
"""


@pytest.fixture(scope="module")
def world_yaml(oasis_dir, tmp_path_factory) -> Path:
    """A world whose files exist only on the (stand-in) hub."""
    path = tmp_path_factory.mktemp("world") / f"{WORLD}.yaml"
    config = {"name": WORLD, "family": "oasis",
              "checkpoints": {"repo": REPO, "revision": "main", "files": FILES},
              "networks": {role: read_json(oasis_dir / f"{role}.json")["kwargs"] for role in FILES},
              "sampler": {"ddim_steps": 2}}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def contents(oasis_dir) -> dict[str, bytes]:
    return {name: (oasis_dir / name).read_bytes() for name in FILES.values()}


def hub_env(hf_home: Path, endpoint: str | None = None, offline: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HF_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env |= {"HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
            "NO_PROXY": "127.0.0.1,localhost", "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run(args: list[str], env: dict[str, str], cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def resolve(world_yaml: Path, project: Path, env: dict[str, str], tty: bool = False) -> subprocess.CompletedProcess:
    """Resolve in a fresh process; with `tty`, stderr is a terminal (tqdm draws bars only there)."""
    args = [sys.executable, "-c", RESOLVE_SCRIPT, str(world_yaml), str(project)]
    if not tty:
        return run(args, env, cwd=project)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # tqdm draws 0 columns on 0x0
    captured = bytearray()

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 1 << 16)
            except OSError:
                return
            if not data:
                return
            captured.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        done = subprocess.run(args, env=env, cwd=project, stdout=subprocess.PIPE, stderr=follower, text=True,
                              timeout=120)
    finally:
        os.close(follower)
        reader.join(timeout=10)
        os.close(leader)
    done.stderr = captured.decode(errors="replace")
    return done


def test_download_shows_progress_and_fills_the_cache(world_yaml, contents, tmp_path):
    hf_home, project = tmp_path / "hf", tmp_path / "project"
    project.mkdir()
    with FakeHub({(REPO, name): data for name, data in contents.items()}) as hub:
        done = resolve(world_yaml, project, hub_env(hf_home, hub.url), tty=True)
    assert done.returncode == 0, done.stdout + done.stderr
    paths = json.loads(done.stdout.splitlines()[-1])
    for role, name in FILES.items():
        path = Path(paths[role])
        assert path.is_relative_to(hf_home)
        assert path.read_bytes() == contents[name]
        assert name in done.stderr  # huggingface_hub's progress bar names each file
    assert "100%" in done.stderr

    again = resolve(world_yaml, project, hub_env(hf_home, offline=True))
    assert again.returncode == 0, again.stdout
    assert json.loads(again.stdout.splitlines()[-1]) == paths

    verify = run([sys.executable, "-m", "engine.checkpoints", "verify", str(world_yaml)],
                 hub_env(hf_home, offline=True))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for role, name in FILES.items():
        assert f"ok: {paths[role]} (" in verify.stdout
        assert hashlib.sha256(contents[name]).hexdigest() in verify.stdout


def test_broken_transfer_resumes_with_a_range_request(tmp_path):
    """huggingface_hub resumes from the last whole chunk it received, so the blob spans several chunks."""
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    blob = random.Random(0).randbytes(chunk * 5 // 2)
    with FakeHub({(REPO, "blob.bin"): blob}, cut_once={"blob.bin"}) as hub:
        done = run([sys.executable, "-c", DOWNLOAD_SCRIPT, REPO, "blob.bin"], hub_env(tmp_path / "hf", hub.url))
        ranges = [r for method, _, r in hub.requests if method == "GET" and r]
    assert done.returncode == 0, done.stdout + done.stderr
    assert Path(done.stdout.strip()).read_bytes() == blob
    assert len(ranges) == 1 and ranges[0] == f"bytes={chunk}-", hub.requests


def test_offline_error_is_one_line_with_a_working_command(world_yaml, contents, tmp_path):
    hf_home, project = tmp_path / "hf", tmp_path / "project"
    project.mkdir()
    failed = resolve(world_yaml, project, hub_env(hf_home, offline=True))
    assert failed.returncode == 3, failed.stdout + failed.stderr
    message = failed.stdout.strip()
    assert len(message.splitlines()) == 1
    command = f"{hub_cli()} download {REPO} {' '.join(FILES.values())} --local-dir checkpoints/{WORLD}"
    assert message.startswith(f"missing {', '.join(FILES.values())} for world '{WORLD}'")
    assert f"download them with: {command} (" in message
    assert all(f"--weights {role}=PATH" in message for role in FILES)

    with FakeHub({(REPO, name): data for name, data in contents.items()}) as hub:
        fetched = run(shlex.split(command), hub_env(hf_home, hub.url), cwd=project)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    found = resolve(world_yaml, project, hub_env(hf_home, offline=True))
    assert found.returncode == 0, found.stdout
    paths = json.loads(found.stdout.splitlines()[-1])
    for role, name in FILES.items():
        assert Path(paths[role]) == project / "checkpoints" / WORLD / name
        assert Path(paths[role]).read_bytes() == contents[name]


def test_missing_file_on_the_hub_is_named(world_yaml, contents, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    only_vae = {(REPO, FILES["vae"]): contents[FILES["vae"]]}
    with FakeHub(only_vae) as hub:
        failed = resolve(world_yaml, project, hub_env(tmp_path / "hf", hub.url))
    assert failed.returncode == 3, failed.stdout + failed.stderr
    message = failed.stdout.strip()
    assert len(message.splitlines()) == 1
    assert message.startswith(f"missing {FILES['dit']}, {FILES['vae']} for world '{WORLD}'")
    assert f"has no file {FILES['dit']}" in message


def test_an_unreachable_hub_is_one_quick_line(world_yaml, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    with socket.socket() as probe:  # a local port nothing listens on: the connection is refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    failed = resolve(world_yaml, project, hub_env(tmp_path / "hf", f"http://127.0.0.1:{port}"))
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert time.monotonic() - start < 15, "no retries against a hub that cannot be reached"
    message = failed.stdout.strip()
    assert len(message.splitlines()) == 1 and f"cannot reach http://127.0.0.1:{port}" in message
    assert "Retrying" not in failed.stderr

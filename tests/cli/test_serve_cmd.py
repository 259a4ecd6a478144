"""``regionspot serve``: settings and model wiring (uvicorn stubbed), user errors, and a real
server process that answers and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from regionspot.cli.main import main
from regionspot.cli.serve_cmd import load_serve_config, server_url

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(mobile_sam_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mobile_sam_model.save_pretrained(tmp_path_factory.mktemp("serve_ckpt"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_builds_the_app_and_runs_uvicorn(mobile_sam_checkpoint: Path, tiny_clip_dir: Path,
                                               text_cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append({"app": app, **kwargs}))
    code = main(["serve", "--sam", str(mobile_sam_checkpoint), "--clip", str(tiny_clip_dir), "--port", "8123",
                 "--set", "limits.max_boxes=7", "cache_size=3", f"text.cache_dir={text_cache_dir}"])
    assert code == 0
    (call,) = calls
    assert call["host"] == "127.0.0.1" and call["port"] == 8123
    out, err = capsys.readouterr()
    assert "http://127.0.0.1:8123" in out and "zero-shot clip-mask-crop" in err
    info = TestClient(call["app"]).get("/v1/info").json()
    assert info["limits"]["max_boxes"] == 7 and info["cache_size"] == 3 and info["trained"] is False
    assert info["method"] == "clip-mask-crop" and "no trained head" in info["model"]


def test_deprecated_positional_settings_still_work(mobile_sam_checkpoint: Path, tiny_clip_dir: Path,
                                                   text_cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append({"app": app, **kwargs}))
    assert main(["serve", "--sam", str(mobile_sam_checkpoint), "--clip", str(tiny_clip_dir), "--untrained",
                 "limits.max_boxes=5", "--set", f"text.cache_dir={text_cache_dir}"]) == 0
    assert "positional KEY=VALUE overrides are deprecated" in capsys.readouterr().err
    info = TestClient(calls[0]["app"]).get("/v1/info").json()
    assert info["limits"]["max_boxes"] == 5 and info["method"] == "regionspot" and "UNTRAINED" in info["model"]


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "limits.max_boxes=0"], "max_boxes"),
    (["--set", "limits.nope=3"], "nope"),
    (["--config", "/no/such/serve.yaml"], "not found"),
])
def test_bad_settings_fail_before_loading_the_model(args: list[str], message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--checkpoint", "/no/such/checkpoint", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_missing_checkpoint_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--checkpoint", "/no/such/checkpoint"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_port_must_be_valid() -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--checkpoint", "x", "--port", "70000"])
    assert stopped.value.code == 2


def test_settings_from_a_yaml_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("limits:\n  max_boxes: 12\n  max_topk: 3\ncache_size: 2\nproposals:\n  points_per_side: 8\n")
    config = load_serve_config(str(path), ["limits.max_topk=4"])
    assert (config.limits.max_boxes, config.limits.max_topk, config.cache_size) == (12, 4, 2)
    assert config.proposals.points_per_side == 8 and config.limits.max_image_side == 4096


def test_server_url_for_wildcard_and_ipv6_hosts() -> None:
    assert server_url("0.0.0.0", 80) == "http://127.0.0.1:80"
    assert server_url("::1", 8000) == "http://[::1]:8000"
    assert server_url("example.org", 8000) == "http://example.org:8000"


def test_real_server_answers_and_stops_on_ctrl_c(checkpoint: Path, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "regionspot", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
         "limits.max_topk=9"],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    try:
        info = wait_for_info(f"http://127.0.0.1:{port}", process, timeout_s=240)
        assert info["trained"] is True and info["limits"]["max_topk"] == 9
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log.seek(0)
    output = log.read()
    assert f"http://127.0.0.1:{port}" in output and "stopped" in output
    assert "Traceback" not in output


def wait_for_info(url: str, process: subprocess.Popen, timeout_s: float) -> dict:
    """``GET /v1/info`` once ``/healthz`` answers; fails if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"regionspot serve exited early with status {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return httpx.get(f"{url}/v1/info", timeout=10).json()
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"regionspot serve did not answer at {url} within {timeout_s} s")

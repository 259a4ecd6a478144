"""Hub ids without network (regionspot.hub): offline mode, an unreachable Hub, the local cache.

Nothing here talks to anything but loopback sockets of this process; the Hub cache is a temporary
folder laid out like Hugging Face's (``models--org--name/snapshots/<hash>``, ``refs/main``).
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from regionspot import hub
from regionspot.backbones.loading import BackboneLoadError
from regionspot.config import RegionSpotConfig, SamBackboneConfig, TextConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read, closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m regionspot ARGS`` in a fresh process (huggingface_hub reads its settings at
    import), with the environment's HF_* variables replaced by ``env``; returns it and its seconds."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "regionspot", *args], env={**base, **env}, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - start


def assert_one_line_hub_error(done: subprocess.CompletedProcess, model: str, flag: str) -> None:
    """Exit 2, one ``error:`` line naming the model and both fixes, no traceback."""
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert model in errors[0] and "local folder" in errors[0], errors[0]
    assert f"regionspot download {flag} {model}" in errors[0] and "$HF_HOME" in errors[0], errors[0]


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty Hub cache folder, no offline variables, no remembered probe; restored afterwards."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", hub.PROBE_TIMEOUT_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.reset_probe_cache()
    yield cache
    hub.reset_probe_cache()


class _AnswerEverything(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Silence the per-request log."""


def test_is_local_tells_paths_from_hub_ids(tmp_path: Path) -> None:
    assert hub.is_local(tmp_path) and hub.is_local("/no/such/folder") and hub.is_local("./model")
    assert hub.is_local("~/models/sam") and hub.is_local("a/b/c") and hub.is_local("mobile_sam.pt")
    assert not hub.is_local("facebook/sam-vit-base") and not hub.is_local("bert-base-uncased")


def test_offline_variable_is_read_when_asked(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not hub.hub_offline()
    for value, expected in (("1", True), ("Yes", True), ("on", True), ("0", False), ("", False)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert hub.hub_offline() is expected, value


def test_probe_verdicts_and_memo(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start = time.monotonic()
    assert "refused" in str(hub.hub_problem()).lower()
    assert time.monotonic() - start < 2
    assert not hub.hub_reachable() and len(hub._PROBES) == 1  # remembered, asked once
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnswerEverything)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}/")
        assert hub.hub_reachable()  # any HTTP answer, even 404, means reachable
        assert hub.prepare_hub_load("org/not-cached", hub.SAM_ROLE) == {}
    finally:
        server.shutdown()
        server.server_close()


def test_probe_gives_up_on_a_server_that_never_answers(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        start = time.monotonic()
        problem = hub.hub_problem(timeout=0.5)
        assert problem is not None and "timed out" in problem
        assert time.monotonic() - start < 2


def test_prepare_hub_load_offline(hub_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                  add_to_hub_cache) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.prepare_hub_load(tmp_path, hub.SAM_ROLE) == {}  # local: nothing to decide
    with pytest.raises(hub.HubUnavailableError) as caught:
        hub.prepare_hub_load("facebook/sam-vit-base", hub.SAM_ROLE)
    message = str(caught.value)
    assert "\n" not in message and "HF_HUB_OFFLINE is set" in message and str(hub_cache) in message
    assert "--set sam.name_or_path=" in message and "regionspot download --sam facebook/sam-vit-base" in message
    add_to_hub_cache(hub_cache, "facebook/sam-vit-base", lambda folder: (folder / "config.json").write_text("{}"))
    assert hub.prepare_hub_load("facebook/sam-vit-base", hub.SAM_ROLE) == {"local_files_only": True}
    with pytest.raises(hub.HubUnavailableError, match="RegionSpot checkpoint"):  # weights not cached
        hub.prepare_hub_load("facebook/sam-vit-base", hub.CHECKPOINT_ROLE, files=("config.json", "model.safetensors"))


@pytest.mark.parametrize("setting", ["offline", "unreachable"])
def test_cached_model_loads_without_network(hub_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            setting: str, add_to_hub_cache) -> None:
    from huggingface_hub import constants

    from regionspot.backbones.clip_text import ClipTextEmbedder, save_tiny_clip
    from regionspot.backbones.clip_vision import ClipVisionMemory

    add_to_hub_cache(hub_cache, "org/tiny-clip", save_tiny_clip)
    if setting == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    looked_up: list[str] = []  # every host name anything in this process tries to reach
    lookup = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: looked_up.append(host) or lookup(host, *a, **k))
    start = time.monotonic()
    vision = ClipVisionMemory.from_pretrained("org/tiny-clip")
    text = ClipTextEmbedder.from_pretrained("org/tiny-clip", cache_dir=str(tmp_path / "text"))
    assert time.monotonic() - start < 10  # the Hub client's own retries take 25 s and more
    assert set(looked_up) <= {"127.0.0.1"}, looked_up  # our probe at most, never the Hub itself
    assert vision.num_tokens == 17 and text.encode_prompts(["a cat"]).shape == (1, 16)
    assert constants.HF_HUB_OFFLINE  # the rest of the process stays off the network too
    with pytest.raises(BackboneLoadError) as caught:  # not cached: at once, one line, both fixes
        ClipVisionMemory.from_pretrained("org/other-clip")
    assert "\n" not in str(caught.value) and "org/other-clip" in str(caught.value)
    assert "--set clip.name_or_path=" in str(caught.value) and "regionspot download --clip" in str(caught.value)


def test_incomplete_cache_names_the_fixes(hub_cache: Path, monkeypatch: pytest.MonkeyPatch, add_to_hub_cache) -> None:
    from regionspot.backbones.clip_text import save_tiny_clip
    from regionspot.backbones.clip_vision import ClipVisionMemory

    snapshot = add_to_hub_cache(hub_cache, "org/tiny-clip", save_tiny_clip)
    (snapshot / "model.safetensors").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneLoadError) as caught:
        ClipVisionMemory.from_pretrained("org/tiny-clip")
    message = str(caught.value)
    assert "\n" not in message and "local Hugging Face cache (HF_HUB_OFFLINE is set)" in message
    assert "regionspot download --clip org/tiny-clip" in message


def test_hub_models_for_config(tmp_path: Path) -> None:
    sam, clip = SamBackboneConfig().name_or_path, RegionSpotConfig().clip.name_or_path
    assert hub.hub_models_for_config(RegionSpotConfig()) == [
        (hub.SAM_ROLE, sam), (f"{hub.CLIP_ROLE} + {hub.TEXT_ROLE}", clip)]
    config = RegionSpotConfig(sam=SamBackboneConfig(name_or_path=str(tmp_path / "mobile_sam.pt")),
                              text=TextConfig(name_or_path="org/text"))
    config.clip.enabled = False
    assert hub.hub_models_for_config(config) == [(hub.TEXT_ROLE, "org/text")]
    config.text = TextConfig(bank=str(tmp_path / "bank.npy"))
    config.clip.enabled = True
    assert hub.hub_models_for_config(config) == [(hub.CLIP_ROLE, clip)]


def test_cli_offline_checkpoint_fails_at_once(tmp_path: Path) -> None:
    done, seconds = run_cli(["info", "--checkpoint", "some-org/some-repo"],
                            {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert_one_line_hub_error(done, "some-org/some-repo", "--checkpoint")
    assert "HF_HUB_OFFLINE is set" in done.stderr
    assert seconds < 10


def test_cli_unreachable_hub_download_fails_at_once(tmp_path: Path) -> None:
    done, seconds = run_cli(["download"], {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
                                           "HF_HOME": str(tmp_path / "hf")})
    default_sam = SamBackboneConfig().name_or_path
    assert_one_line_hub_error(done, default_sam, "--sam")
    assert "cannot be reached" in done.stderr and "Connection refused" in done.stderr
    assert seconds < 10

"""Hugging Face Hub ids on machines without network: fail at once with one actionable line, or load
from the local cache, instead of waiting for the Hub client's retries.

* ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set, read when a model loads: the network is
  never touched; a model in the local Hugging Face cache loads from it, any other fails at once.
* Otherwise one quick request to the Hub endpoint (``HF_ENDPOINT``, default huggingface.co) tells
  whether it can be reached (remembered per endpoint for the process); when it cannot, a cached
  model loads from the cache (``local_files_only``) and any other fails at once.

The error names the model and the two fixes: a local folder instead of the id, or
``regionspot download`` on a machine with network, then copying its Hugging Face cache.
This module sits at the bottom (stdlib, huggingface_hub and :mod:`regionspot.config` only).
"""

from __future__ import annotations

import http.client
import os
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from regionspot.config import RegionSpotConfig, ZeroShotConfig

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0
PROBE_TIMEOUT_ENV = "REGIONSPOT_HUB_TIMEOUT"
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
LOCAL_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")

SAM_ROLE = "SAM backbone"
CLIP_ROLE = "CLIP backbone"
TEXT_ROLE = "CLIP text tower"
CHECKPOINT_ROLE = "RegionSpot checkpoint"
# role -> (how to give a local folder instead, the ``regionspot download`` flag that fetches it)
ROLE_FIXES: dict[str, tuple[str, str]] = {
    SAM_ROLE: ("e.g. --set sam.name_or_path=/path/to/folder", "--sam"),
    CLIP_ROLE: ("e.g. --set clip.name_or_path=/path/to/folder", "--clip"),
    TEXT_ROLE: ("e.g. --set text.name_or_path=/path/to/folder", "--clip"),
    CHECKPOINT_ROLE: ("a checkpoint folder with config.json and model.safetensors", "--checkpoint"),
}
GENERIC_FIX = ("a folder written by save_pretrained, wherever the id was given", "--clip")

# endpoint -> None when it answered, else why it could not be reached (reset_probe_cache empties it)
_PROBES: dict[str, str | None] = {}
_PROBES_LOCK = threading.Lock()
# whether this module switched huggingface_hub into its offline mode (reset_probe_cache undoes it)
_FORCED_OFFLINE = False


class HubUnavailableError(RuntimeError):
    """A Hub id was named, the Hub cannot be used (offline mode or unreachable) and the model is
    not in the local cache. Callers re-raise it as their own user-error type."""


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set to 1/true/yes/on, read now (huggingface_hub
    reads it once at import; its own verdict counts too)."""
    from huggingface_hub import constants

    values = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    if any(v.strip().lower() in TRUE_VALUES for v in values):
        return True
    return bool(constants.HF_HUB_OFFLINE) and not _FORCED_OFFLINE


def hub_endpoint() -> str:
    """The Hub's address: ``HF_ENDPOINT`` (read now) or https://huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_dir() -> str:
    """The Hugging Face hub cache folder every download and cache lookup uses."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def is_local(name_or_path: str | os.PathLike[str]) -> bool:
    """True for anything that is not a Hub id: an existing file or folder, or text written like a
    path (absolute, ``./``, ``~``, several slashes, or a ``.pt``/``.pth``/... file name)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = str(name_or_path)
    if Path(text).expanduser().exists() or text.lower().endswith(LOCAL_SUFFIXES):
        return True
    try:
        validate_repo_id(text)
    except HFValidationError:
        return True
    return False


def reset_probe_cache() -> None:
    """Forget which endpoints answered and leave the offline mode this module switched on, if
    any (tests change ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` within one process)."""
    global _FORCED_OFFLINE
    from huggingface_hub import constants

    with _PROBES_LOCK:
        _PROBES.clear()
        if _FORCED_OFFLINE:
            constants.HF_HUB_OFFLINE = False
            _FORCED_OFFLINE = False


def _enter_hub_offline_mode() -> None:
    """Switch huggingface_hub (and transformers, which asks it) into offline mode for the rest of
    the process, so that none of their other requests waits on an unusable Hub either (for
    example huggingface_hub's user-agent lookup, which otherwise tries the Hub for seconds)."""
    global _FORCED_OFFLINE
    from huggingface_hub import constants

    with _PROBES_LOCK:
        if not constants.HF_HUB_OFFLINE:
            constants.HF_HUB_OFFLINE = True
            _FORCED_OFFLINE = True


def probe_timeout() -> float:
    """Seconds the reachability probe waits: ``REGIONSPOT_HUB_TIMEOUT`` or 3."""
    try:
        return float(os.environ.get(PROBE_TIMEOUT_ENV, PROBE_TIMEOUT_S))
    except ValueError:
        return PROBE_TIMEOUT_S


def hub_problem(timeout: float | None = None) -> str | None:
    """None when the Hub endpoint answers an HTTP request, else why it cannot be reached.
    Asked once per endpoint and process."""
    endpoint = hub_endpoint()
    with _PROBES_LOCK:
        if endpoint in _PROBES:
            return _PROBES[endpoint]
    problem = _probe(endpoint + "/", probe_timeout() if timeout is None else timeout)
    with _PROBES_LOCK:
        _PROBES[endpoint] = problem
    return problem


def hub_reachable(timeout: float | None = None) -> bool:
    """Whether the Hub endpoint answers (see :func:`hub_problem`)."""
    return hub_problem(timeout) is None


def _probe(url: str, timeout: float) -> str | None:
    """One HEAD request to ``url`` in a helper thread; None when any HTTP answer came back.

    The thread bounds the wait: name lookups ignore socket time-outs, so a stuck resolver would
    otherwise hold the caller for as long as it likes (the daemon thread is simply abandoned).
    """
    outcome: list[str | None] = []

    def attempt() -> None:
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "regionspot"})
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # the server answered, whatever the status: it is reachable
        except urllib.error.URLError as exc:
            # a TLS error means something answered; certificates are the Hub client's business
            outcome.append(None if isinstance(exc.reason, ssl.SSLError) else str(exc.reason))
        except ssl.SSLError:
            outcome.append(None)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=attempt, name="regionspot-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def is_cached(repo_id: str, filename: str = "config.json") -> bool:
    """Whether ``filename`` of Hub repo ``repo_id`` (its ``main``) is in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename), str)


def _fixes(what: str) -> tuple[str, str]:
    """(local-folder hint, download flag) of a role; a joined role ``A + B`` uses A's."""
    return ROLE_FIXES.get(what.split(" + ")[0], GENERIC_FIX)


def unavailable_message(name_or_path: str, what: str, cause: str, verb: str = "load") -> str:
    """The one-line error: which model, why the Hub cannot be used, and the two fixes."""
    local_hint, flag = _fixes(what)
    return (f"cannot {verb} the {what} {name_or_path!r}: {cause}, no local folder has that name and it is not in "
            f"the local Hugging Face cache ({hub_cache_dir()}). Fix: pass a local folder instead of the Hub id "
            f"({local_hint}), or run `regionspot download {flag} {name_or_path}` on a machine with network and "
            f"copy its Hugging Face cache ($HF_HOME, by default ~/.cache/huggingface) to this machine")


def fix_hint(name_or_path: str, what: str) -> str:
    """The two fixes alone, for errors raised while reading a model from the local cache."""
    local_hint, flag = _fixes(what)
    return (f"pass a local folder instead ({local_hint}), or run `regionspot download {flag} {name_or_path}` "
            f"on a machine with network and copy its Hugging Face cache ($HF_HOME) here")


def offline_cause() -> str | None:
    """Why the Hub cannot be used now (offline mode, or the probe's failure), None when it can.

    When it cannot, huggingface_hub is put into offline mode for the rest of the process (the
    probe's verdict is kept for the process too).
    """
    if hub_offline():
        cause = "HF_HUB_OFFLINE is set"
    else:
        problem = hub_problem()
        if problem is None:
            return None
        cause = f"the Hugging Face Hub at {hub_endpoint()} cannot be reached ({problem})"
    _enter_hub_offline_mode()
    return cause


def prepare_hub_load(name_or_path: str | os.PathLike[str], what: str,
                     files: Iterable[str] = ("config.json",)) -> dict[str, Any]:
    """Extra ``from_pretrained``/``snapshot_download`` keyword arguments for ``name_or_path``.

    ``{}`` for a local path or when the Hub can be used; ``{"local_files_only": True}`` when it
    cannot (offline mode or unreachable) but ``files`` of the repo are in the local cache.
    Raises :class:`HubUnavailableError` (one line, both fixes) otherwise; ``what`` is the role
    named in it (``"SAM backbone"``, ``"RegionSpot checkpoint"``, ...).
    """
    name = str(name_or_path)
    if is_local(name):
        return {}
    cause = offline_cause()
    if cause is None:
        return {}
    if all(is_cached(name, filename) for filename in files):
        return {"local_files_only": True}
    raise HubUnavailableError(unavailable_message(name, what, cause))


def hub_models_for_config(config: RegionSpotConfig | ZeroShotConfig) -> list[tuple[str, str]]:
    """``(role, Hub id)`` of every Hub model that building ``config``'s model loads, in loading
    order and without repeats (a role joined with ``+`` when one repo serves two). Local paths and
    ``.pt``/``.pth`` files are left out. Works for any config with ``sam``/``clip``/``text``."""
    wanted: list[tuple[str, str]] = [(SAM_ROLE, config.sam.name_or_path)]
    if getattr(config.clip, "enabled", True):
        wanted.append((CLIP_ROLE, config.clip.name_or_path))
    if not config.text.bank:
        wanted.append((TEXT_ROLE, config.text.name_or_path or config.clip.name_or_path))
    roles: dict[str, list[str]] = {}
    for role, name in wanted:
        if not is_local(name):
            roles.setdefault(name, []).append(role)
    return [(" + ".join(names), repo_id) for repo_id, names in roles.items()]

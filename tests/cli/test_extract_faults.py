"""``regionspot extract-tokens`` on a full disk or into a read-only folder: one ``error:`` line
naming the file and why, exit status 2, no traceback, the finished shards kept, and the same
command afterwards finishing the cache exactly as an undisturbed run would have."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from regionspot import fileio
from regionspot.cache import shards
from regionspot.cli.main import main

CONSOLE_SCRIPT = Path(sys.executable).with_name("regionspot")
PROBE = "import sys\ntry:\n    open(sys.argv[1] + '/x', 'w')\nexcept PermissionError:\n    print('denied')\n"


def unprivileged_prefix(tmp_path: Path) -> list[str]:
    """A command prefix under which a ``chmod 0o555`` folder refuses writes: none for an ordinary
    user; for root (which ignores permissions) ``setpriv`` dropping that capability, when it can;
    otherwise the test is skipped."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("runs as root, which ignores folder permissions, and setpriv (to drop that) is missing")
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner"]
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    try:
        done = subprocess.run([*prefix, sys.executable, "-c", PROBE, str(probe)], capture_output=True, text=True,
                              check=False)
    finally:
        probe.chmod(0o755)
    if done.stdout.strip() != "denied":
        pytest.skip("runs as root, which ignores folder permissions, and cannot drop that privilege here")
    return prefix


def run_read_only(folder: Path, prefix: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the console script (after ``prefix``) with ``folder`` read-only (0o555) meanwhile."""
    command = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.is_file() else [sys.executable, "-m", "regionspot"]
    folder.chmod(0o555)
    try:
        return subprocess.run([*prefix, *command, *argv], capture_output=True, text=True, timeout=600, check=False)
    finally:
        folder.chmod(0o755)


def write_coco_subset(coco_sample: Path, path: Path, image_ids: tuple[int, ...] = (25, 30, 34)) -> Path:
    """The COCO sample's annotations restricted to ``image_ids``, written to ``path``."""
    document = json.loads((coco_sample / "annotations.json").read_text())
    document["images"] = [i for i in document["images"] if i["id"] in image_ids]
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] in image_ids]
    path.write_text(json.dumps(document))
    return path


def assert_one_error_line(err: str, expected: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"error: {expected}"], err


def full_disk(monkeypatch: pytest.MonkeyPatch, module: object, function: str, name: str, after: int = 0) -> None:
    """``module.function(target, payload)`` (an atomic writer) fails half-way with ENOSPC, as on a
    full disk, for the writes of a file called ``name`` after the first ``after``; it goes through
    the real atomic writer, which must leave no temporary file behind."""
    real, writes = getattr(module, function), [0]

    def write(target: Path, payload: object) -> None:
        writes[0] += Path(target).name == name
        if Path(target).name != name or writes[0] <= after:
            real(target, payload)
            return

        def half(stream: IO[bytes]) -> None:
            stream.write(payload[: len(payload) // 2] if isinstance(payload, bytes) else b"half a file")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        fileio.atomic_write(Path(target), half)

    monkeypatch.setattr(module, function, write)


@pytest.fixture(scope="module")
def subset(coco_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_coco_subset(coco_sample, tmp_path_factory.mktemp("annotations") / "subset.json")


@pytest.fixture
def extract_argv(subset: Path, coco_sample: Path, tiny_sam_dir: Path) -> Callable[[Path], list[str]]:
    """``extract-tokens`` arguments writing the cache to a given folder, one image per shard."""
    def argv(out: Path) -> list[str]:
        return ["extract-tokens", "--data", str(subset), "--images", str(coco_sample / "images"),
                "--sam", str(tiny_sam_dir), "--out", str(out), "--shard-size", "1", "--no-progress"]
    return argv


def files_of(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_a_full_disk_mid_way_keeps_finished_shards_and_resumes_exactly(extract_argv, tmp_path: Path, monkeypatch,
                                                                       capsys) -> None:
    assert main(extract_argv(tmp_path / "reference")) == 0
    out = tmp_path / "cache"
    full_disk(monkeypatch, shards, "atomic_write_bytes", shards.shard_file_name(1))
    assert main(extract_argv(out)) == 2
    assert_one_error_line(capsys.readouterr().err,
                          f"cannot write {out / shards.shard_file_name(1)}: No space left on device; free some disk "
                          f"space; the 1 finished shard(s) in {out} are kept: run the same command again to resume")
    assert sorted(files_of(out)) == ["manifest.json", shards.shard_file_name(0)]  # no temporary file left
    assert list(json.loads((out / "manifest.json").read_text())["shards"]) == ["0"]
    monkeypatch.undo()
    assert main(extract_argv(out)) == 0
    assert "3/3 shards (1 skipped, 2 computed)" in capsys.readouterr().out
    assert files_of(out) == files_of(tmp_path / "reference")


def test_a_full_disk_on_the_manifest_keeps_the_previous_one(extract_argv, tmp_path: Path, monkeypatch,
                                                           capsys) -> None:
    out = tmp_path / "cache"
    full_disk(monkeypatch, shards, "atomic_write_bytes", "manifest.json", after=1)  # the fresh manifest lands, the first update does not
    assert main(extract_argv(out)) == 2
    assert_one_error_line(capsys.readouterr().err,
                          f"cannot write {out / 'manifest.json'}: No space left on device; free some disk space; "
                          f"finished shards in {out} are kept: run the same command again to resume")
    assert json.loads((out / "manifest.json").read_text())["shards"] == {}  # still the last good manifest
    monkeypatch.undo()
    assert main(extract_argv(out)) == 0
    assert "3/3 shards (0 skipped, 3 computed)" in capsys.readouterr().out


def test_a_read_only_folder_is_one_error_line(extract_argv, tmp_path: Path) -> None:
    prefix = unprivileged_prefix(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    done = run_read_only(locked, prefix, *extract_argv(locked / "cache"))
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, f"cannot write {locked / 'cache'}: Permission denied; make {locked} writable "
                                       f"or choose another folder; finished shards in {locked / 'cache'} are kept: "
                                       "run the same command again to resume")
    assert list(locked.iterdir()) == []


def test_a_read_only_unfinished_cache_keeps_its_shards(extract_argv, tmp_path: Path) -> None:
    prefix = unprivileged_prefix(tmp_path)
    out = tmp_path / "cache"
    assert main(extract_argv(out)) == 0
    (out / shards.shard_file_name(2)).unlink()  # to be recomputed: the manifest must change
    before = files_of(out)
    done = run_read_only(out, prefix, *extract_argv(out))
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, f"cannot write {out / 'manifest.json'}: Permission denied; make {out} "
                                       f"writable or choose another folder; finished shards in {out} are kept: run "
                                       "the same command again to resume")
    assert files_of(out) == before

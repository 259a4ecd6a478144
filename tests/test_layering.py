"""The package's layers look down only, so that no change can quietly tie a lower part to a higher one.

Every module of ``regionspot`` is parsed (not imported) and each of its imports, at the top, in
functions or under ``TYPE_CHECKING``, is checked against :data:`LAYERS`, lowest first:

============  ==========================================================================
layer         packages and modules (``regionspot.<name>``)
============  ==========================================================================
base          ops, config, presets, devices, fileio, vocab, processes, prefetch, hub,
              weights, assets, results, viz
backbones     backbones
model         model, proposals
predictor     predictor, and the package's own ``__init__`` (the public facade)
data          datasets, cache
runs          train, eval (side by side: neither imports the other)
apps          serve, bench (side by side)
cli           cli (a command module ``*_cmd`` imports no other command module; only
              ``cli.main`` imports them)
entry         ``__main__``
============  ==========================================================================

A module may import its own layer (except a side-by-side neighbour) and the layers below.
``from regionspot import __version__`` is allowed everywhere (the constant needs no import).
The few upward imports that remain on purpose are listed in :data:`ALLOWED_UPWARD` with their
reason; an entry that is no longer needed fails too, so that the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "regionspot"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
FACADE = "<package>"  # the unit of regionspot/__init__.py

LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("base", frozenset({"ops", "config", "presets", "devices", "fileio", "vocab", "processes", "prefetch", "hub",
                        "weights", "assets", "results", "viz"})),
    ("backbones", frozenset({"backbones"})),
    ("model", frozenset({"model", "proposals"})),
    ("predictor", frozenset({"predictor", FACADE})),
    ("data", frozenset({"datasets", "cache"})),
    ("runs", frozenset({"train", "eval"})),
    ("apps", frozenset({"serve", "bench"})),
    ("cli", frozenset({"cli"})),
    ("entry", frozenset({"__main__"})),
)
SIDE_BY_SIDE = (frozenset({"train", "eval"}), frozenset({"serve", "bench"}))

# (importing module, imported module): why the upward import stays
ALLOWED_UPWARD = {
    ("regionspot.model.regionspot", "regionspot.predictor"):
        "RegionSpot.predictor() is the public factory of its RegionPredictor (imported inside the method)",
    ("regionspot.model.zero_shot", "regionspot.predictor"):
        "ZeroShotCLIP.predictor() is the public factory of its RegionPredictor (imported inside the method)",
}
COMMAND_FROM_CLI = ("(a CLI module imports a command module; share helpers through cli/arguments.py, outputs.py, "
                    "model_args.py or dataset_args.py)")


def layer_of(unit: str) -> int:
    for index, (_, units) in enumerate(LAYERS):
        if unit in units:
            return index
    raise KeyError(unit)


def unit_of(module: str) -> str:
    """``regionspot.eval.runner`` -> ``eval``; ``regionspot.config`` -> ``config``; ``regionspot`` -> the facade."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FACADE


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def is_module(name: str) -> bool:
    """Whether ``name`` (``regionspot.x.y``) is a module or package of the source tree."""
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """``(imported regionspot module, line)`` for every import in ``source`` (anywhere in it).
    ``from a import b`` names ``a.b`` when that is a module, else ``a``; relative imports are
    resolved against ``module``. ``from regionspot import __version__`` is left out."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            if base == PACKAGE and all(alias.name == "__version__" for alias in node.names):
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.append((target if is_module(target) else base, node.lineno))
    return [(name, line) for name, line in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def upward_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    """The imports of ``module`` that break the layering, as ``module:line -> target (why)``."""
    unit = unit_of(module)
    level = layer_of(unit)
    problems = []
    for target, line in imports_of(source, module, is_package):
        other = unit_of(target)
        if other == unit:
            if unit == "cli" and target.endswith("_cmd") and module != "regionspot.cli.main" and target != module:
                problems.append(f"{module}:{line} -> {target} {COMMAND_FROM_CLI}")
            continue
        if (module, target) in ALLOWED_UPWARD:
            continue
        if frozenset({unit, other}) in SIDE_BY_SIDE:
            problems.append(f"{module}:{line} -> {target} ({unit} and {other} sit side by side)")
        elif layer_of(other) > level:
            problems.append(f"{module}:{line} -> {target} (layer {LAYERS[level][0]} imports the higher layer "
                            f"{LAYERS[layer_of(other)][0]})")
    return problems


def test_every_module_has_a_layer() -> None:
    units = {unit_of(module) for module in package_modules()}
    known = set().union(*(units for _, units in LAYERS))
    assert units - known == set(), "add these to LAYERS in tests/test_layering.py"


def test_layers_look_down_only() -> None:
    problems = []
    for module, path in package_modules().items():
        problems += upward_imports(module, path.read_text(encoding="utf-8"), path.name == "__init__.py")
    assert problems == [], "\n".join(problems)


def test_allowed_upward_imports_are_still_needed() -> None:
    modules = package_modules()
    for (module, target), why in ALLOWED_UPWARD.items():
        path = modules[module]
        targets = {name for name, _ in imports_of(path.read_text(encoding="utf-8"), module)}
        assert target in targets, f"{module} no longer imports {target}: drop it from ALLOWED_UPWARD ({why})"


def test_cli_command_modules_exist() -> None:
    """The command-module rule has something to check (the naming ``*_cmd`` is still in use)."""
    commands = [module for module in package_modules() if module.startswith("regionspot.cli.")
                and module.endswith("_cmd")]
    assert len(commands) >= 5


@pytest.mark.parametrize(("module", "source", "expected"), [
    ("regionspot.eval.runner", "def f():\n    from regionspot.train.config import TrainConfig\n",
     "regionspot.eval.runner:2 -> regionspot.train.config (eval and train sit side by side)"),
    ("regionspot.datasets.augment",
     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import regionspot.train.config\n",
     "regionspot.datasets.augment:3 -> regionspot.train.config (layer data imports the higher layer runs)"),
    ("regionspot.cli.extract_cmd", "from regionspot.cli import predict_cmd\n",
     "regionspot.cli.extract_cmd:1 -> regionspot.cli.predict_cmd " + COMMAND_FROM_CLI),
    ("regionspot.cli.dataset_args", "from regionspot.cli.eval_cmd import add_parser\n",
     "regionspot.cli.dataset_args:1 -> regionspot.cli.eval_cmd " + COMMAND_FROM_CLI),
    ("regionspot.ops.boxes", "from ..model import fusion\n",
     "regionspot.ops.boxes:1 -> regionspot.model.fusion (layer base imports the higher layer model)"),
], ids=["in a function", "under TYPE_CHECKING", "command from command", "helper from command", "relative"])
def test_checker_finds_upward_imports(module: str, source: str, expected: str) -> None:
    assert upward_imports(module, source) == [expected]


@pytest.mark.parametrize(("module", "source"), [
    ("regionspot.model.checkpoint", "from regionspot import __version__\n"),
    ("regionspot.cli.main", "from regionspot.cli import eval_cmd, predict_cmd\n"),
    ("regionspot.train.trainer", "import torch.distributed\nfrom regionspot.processes import barrier\n"),
    ("regionspot.eval.runner", "from regionspot.datasets.coco_format import CocoDataset\n"),
], ids=["version", "cli main", "outside the package", "a lower layer"])
def test_checker_accepts_downward_imports(module: str, source: str) -> None:
    assert upward_imports(module, source) == []

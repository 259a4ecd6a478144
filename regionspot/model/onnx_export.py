"""``regionspot export onnx``: a RegionSpot model as ONNX graphs plus its checkpoint, in one folder.

The folder is an ordinary checkpoint (``config.json`` + ``model.safetensors``, so PyTorch still
loads it) with the graphs of :mod:`regionspot.model.onnx_graphs` and ``onnx.json``, the manifest
that :mod:`regionspot.model.onnx_runtime` reads: what each graph is, the pre-processing each
tower expects (input sizes, mean/std), the backbones it was exported from, and the largest
difference between onnxruntime and PyTorch measured on each graph at export, on a box count other
than the one traced (so a dynamic count is checked every time).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from regionspot.backbones.onnx_backbones import OnnxGraph
from regionspot.backbones.sam_geometry import preprocess_image
from regionspot.backbones.sam_tokenizer import SamRegionTokenizer
from regionspot.config import ConfigError
from regionspot.fileio import atomic_write_bytes, file_sha256, write_failure
from regionspot.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from regionspot.model.fusion import RegionFusion
from regionspot.model.onnx_graphs import (
    BoxDecoderGraph,
    ClipMemoryGraph,
    RegionHeadGraph,
    RegionPathGraph,
    SamImageEncoderGraph,
)
from regionspot.model.onnx_runtime import MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION
from regionspot.model.recognizer import Recognizer
from regionspot.model.regionspot import RegionSpot, recorded_sam_config
from regionspot.weights import CheckpointError

#: ONNX opset of the exported graphs (onnxruntime >= 1.16 runs it).
OPSET = 18
#: Loggers of torch's exporter and onnxscript's optimiser, quiet during export: their notes
#: (torchvision ops this model never uses, constants not folded) are not for our users.
EXPORTER_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")
#: Largest difference from PyTorch an export accepts on any output of any graph, relative to the
#: output's largest magnitude (see :func:`graph_difference`).
PARITY_TOLERANCE = 1e-4


@dataclass
class GraphSpec:
    """One graph to export: its module, example inputs (by name), output names, dynamic axes."""

    name: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: list[str]
    dynamic: dict[str, dict[int, str]]


def exporter_missing() -> str | None:
    """The first module that ONNX export and its checks need but that is not installed, or None."""
    import importlib.util

    return next((name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None),
                None)


def check_exporter() -> None:
    """ConfigError saying how to install what torch's ONNX exporter needs, when it is missing."""
    missing = exporter_missing()
    if missing is not None:
        raise ConfigError(f"ONNX export needs the onnx extra ({missing} is missing): pip install 'regionspot[onnx]'")
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    if (major, minor) < (2, 6):
        raise ConfigError(f"ONNX export needs torch >= 2.6 (its torch.export-based exporter); this is "
                          f"torch {torch.__version__}")


def example_inputs(model: RegionSpot, boxes: int, names: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs every graph can be traced and checked on: a random 480x640 photo's pixels for both
    towers, its SAM embedding and CLIP memory, ``boxes`` boxes in SAM's input frame and ``names``
    unit text embeddings."""
    tokenizer = _sam_tokenizer(model)
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (480, 640, 3), dtype=torch.uint8, generator=generator).numpy()
    pixels, input_size = preprocess_image(image, tokenizer.image_input_size)
    with torch.no_grad():
        embeddings = tokenizer.image_encoder(pixels)
    corner = torch.rand(boxes, 2, generator=generator) * torch.tensor(input_size[::-1]) * 0.7
    extent = torch.rand(boxes, 2, generator=generator) * torch.tensor(input_size[::-1]) * 0.3 + 4
    text = torch.nn.functional.normalize(torch.randn(names, model.config.fusion.text_dim, generator=generator), dim=-1)
    inputs = {"sam_pixels": pixels, "embeddings": embeddings, "boxes": torch.cat([corner, corner + extent], 1),
              "text": text}
    if model.image_encoder is not None:
        pixels = model.image_encoder.preprocess(image)
        inputs["clip_pixels"] = torch.stack([pixels, pixels.flip(-1)])  # two images: the batch size stays dynamic
        with torch.no_grad():
            inputs["memory"] = model.image_encoder.encode_image(inputs["clip_pixels"][:1])
    return inputs


def graph_specs(model: RegionSpot, inputs: dict[str, torch.Tensor]) -> list[GraphSpec]:
    """The graphs of :mod:`regionspot.model.onnx_graphs` for ``model``, with example inputs."""
    tokenizer, fusion = _sam_tokenizer(model), _torch_fusion(model)
    boxes = {"embeddings": inputs["embeddings"], "boxes": inputs["boxes"]}
    per_box = {"boxes": {0: "regions"}}
    memory = {"memory": inputs["memory"]} if "memory" in inputs else {}
    with torch.no_grad():
        tokens = tokenizer.head(inputs["embeddings"], inputs["boxes"], with_masks=False).tokens
    # the head is traced on two images (a size of 1 would be fixed in the graph): each region
    # alone is a batch of one-region images (predict's together=False)
    head_inputs = {"tokens": torch.stack([tokens, tokens.flip(0)]),
                   **({"memory": memory["memory"].expand(2, -1, -1)} if memory else {})}
    specs = [GraphSpec("sam_image_encoder", SamImageEncoderGraph(tokenizer.image_encoder),
                       {"pixels": inputs["sam_pixels"]}, ["embeddings"], {})]
    if model.image_encoder is not None:
        specs.append(GraphSpec("clip_image_memory", ClipMemoryGraph(model.image_encoder),  # type: ignore[arg-type]
                               {"pixels": inputs["clip_pixels"]}, ["memory"], {"pixels": {0: "images"}}))
    specs += [
        GraphSpec("sam_box_tokens", BoxDecoderGraph(tokenizer.head, with_masks=False), boxes,
                  ["tokens", "mask_scores"], per_box),
        GraphSpec("sam_box_masks", BoxDecoderGraph(tokenizer.head, with_masks=True), boxes,
                  ["tokens", "mask_scores", "mask_logits"], per_box),
        GraphSpec("region_head", RegionHeadGraph(fusion), head_inputs,
                  ["embeddings", "attention"] if memory else ["embeddings"],
                  {"tokens": {0: "images", 1: "regions"}, **({"memory": {0: "images"}} if memory else {})}),
        GraphSpec("region_path", RegionPathGraph(tokenizer.head, fusion),
                  {**boxes, "text": inputs["text"], **memory}, ["scores", "mask_logits", "mask_scores"],
                  {**per_box, "text": {0: "names"}}),
    ]
    return specs


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Only errors from the loggers ``names`` while the block runs."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_graph(spec: GraphSpec, path: Path) -> None:
    """Trace ``spec.module`` with torch.export and write it as ONNX to ``path``."""
    names = list(spec.inputs)
    dims: dict[str, Any] = {}
    dynamic_shapes = tuple({axis: dims.setdefault(label, torch.export.Dim(label, min=1))
                            for axis, label in spec.dynamic.get(name, {}).items()} or None for name in names)
    with warnings.catch_warnings(), quiet_loggers(*EXPORTER_LOGGERS), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(spec.module.eval(), tuple(spec.inputs.values()), input_names=names,
                                    output_names=spec.outputs, dynamic_shapes=dynamic_shapes, opset_version=OPSET,
                                    dynamo=True, verbose=False, external_data=False)
    assert program is not None  # dynamo=True always returns the program
    program.save(str(path))


def graph_difference(spec: GraphSpec, path: Path, inputs: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(largest absolute, largest relative) difference between onnxruntime on ``path`` and
    PyTorch on ``inputs`` over all outputs; relative: to that output's largest magnitude, so that
    it means the same for mask logits in the tens and for embeddings near 0."""
    got = OnnxGraph(path)(**inputs)
    with torch.no_grad():
        expected = spec.module(*inputs.values())
    expected = expected if isinstance(expected, tuple) else (expected,)
    absolute = [(g - e).abs().max() for g, e in zip(got, expected, strict=True)]
    relative = [a / e.abs().max().clamp_min(1e-30) for a, e in zip(absolute, expected, strict=True)]
    return float(max(absolute)), float(max(relative))


def export_onnx(model: Recognizer, out: str | Path, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write ``model``'s checkpoint, graphs and manifest to ``out``; return the manifest. Each graph
    is traced on 3 boxes and checked against PyTorch on 5 (ConfigError when a difference exceeds
    :data:`PARITY_TOLERANCE`). The manifest is written last and removed first, so a folder whose
    export failed or was stopped is never taken for a usable one; CheckpointError when the folder
    cannot be written."""
    check_exporter()
    if not isinstance(model, RegionSpot):
        raise ConfigError("only a RegionSpot head exports to ONNX (give --checkpoint, or --untrained to try it)")
    _torch_fusion(model)
    model = model.to("cpu").float().eval()
    model.config = dataclasses.replace(model.config, sam=recorded_sam_config(model.config.sam, model.region_tokenizer))
    folder = Path(out)
    model.save_pretrained(folder)  # CheckpointError for a folder that cannot be written
    try:
        (folder / MANIFEST_NAME).unlink(missing_ok=True)
        graphs = export_graphs(model, folder, log)
        manifest = manifest_for(model, graphs, folder)
        atomic_write_bytes(folder / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
    except OSError as exc:
        raise CheckpointError(f"{write_failure(folder / MANIFEST_NAME, exc)}; the ONNX export {folder} was not "
                              "written") from None
    return manifest


def export_graphs(model: RegionSpot, folder: Path, log: Callable[[str], None] | None) -> dict[str, Any]:
    """Each graph of :func:`graph_specs` written to ``folder`` and checked (see :func:`export_onnx`)."""
    traced = graph_specs(model, example_inputs(model, boxes=3))
    checked = {spec.name: spec for spec in graph_specs(model, example_inputs(model, boxes=5, names=4, seed=1))}
    graphs: dict[str, Any] = {}
    for spec in traced:
        path = folder / f"{spec.name}.onnx"
        if log:
            log(f"exporting {spec.name} -> {path}")
        export_graph(spec, path)
        check = checked[spec.name]
        absolute, relative = graph_difference(check, path, check.inputs)
        if not relative <= PARITY_TOLERANCE:
            raise ConfigError(f"{spec.name}: onnxruntime differs from PyTorch by {relative:.2e} of the output's "
                              f"magnitude (more than {PARITY_TOLERANCE:g}); the export is not usable")
        graphs[spec.name] = {"file": path.name, "inputs": list(spec.inputs), "outputs": spec.outputs,
                             "max_abs_difference": absolute, "max_rel_difference": relative}
    return graphs


def manifest_for(model: RegionSpot, graphs: dict[str, Any], folder: Path) -> dict[str, Any]:
    """What the runtime needs besides the graphs (see the module docstring), and the sha256 of
    the checkpoint files in ``folder`` the graphs were made from (checked when loaded)."""
    from regionspot import __version__

    tokenizer = _sam_tokenizer(model)
    clip = None
    if model.image_encoder is not None:
        encoder = model.image_encoder
        mean, std = getattr(encoder, "mean", None), getattr(encoder, "std", None)
        if mean is None or std is None:
            raise ConfigError(f"ONNX export needs the CLIP adapter's pixel mean and std; {type(encoder).__name__} "
                              "has no mean/std attributes")
        clip = {"image_size": encoder.image_size, "width": encoder.width, "describe": encoder.describe(),
                "mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    return {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "regionspot_version": __version__,
            "opset": OPSET, "torch": torch.__version__, "graphs": graphs,
            "sam": {"image_input_size": tokenizer.image_input_size, "token_dim": tokenizer.token_dim,
                    "describe": tokenizer.describe()},
            "clip": clip, "origin": dict(model.origin),
            "checkpoint_sha256": {name: file_sha256(folder / name) for name in (CONFIG_NAME, WEIGHTS_NAME)}}


def _torch_fusion(model: RegionSpot) -> RegionFusion:
    if not isinstance(model.fusion, RegionFusion):
        raise ConfigError("this model already runs in onnxruntime; export the PyTorch checkpoint instead")
    return model.fusion


def _sam_tokenizer(model: RegionSpot) -> SamRegionTokenizer:
    tokenizer = model.region_tokenizer
    if not isinstance(tokenizer, SamRegionTokenizer):
        raise ConfigError(f"ONNX export needs the built-in SAM adapter; {type(tokenizer).__name__} is not one")
    return tokenizer


__all__: Sequence[str] = ("export_onnx", "graph_specs")

"""Evaluate RegionSpot or a CLIP baseline on a COCO/LVIS dataset, with boxes from ground truth,
a proposals file or auto proposals, by the paper's protocol (see :mod:`regionspot.eval.protocol`);
every report names the model that answered (:func:`model_summary`) and states the protocol.

    config = EvalConfig(annotations="coco-sample/annotations.json", boxes="gt",
                        model=ModelSource(checkpoint="runs/x/final"))
    run = run_evaluation(config, out=Path("eval-out"))   # None on ranks other than 0
    run.document["bbox"]["metrics"]["AP"]

Under ``torchrun`` images are split across processes (``rank::world_size``); each process writes
its detections to its own shard file as it goes and rank 0 evaluates from the shards, one image
at a time (:mod:`regionspot.eval.output_shards`), and writes: the numbers are those of one
process, and no process holds all the detections as Python objects.
Batch prediction without evaluation is :mod:`regionspot.eval.batch_predict`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from regionspot.config import ConfigError, to_dict
from regionspot.datasets.coco_format import DatasetError, dataset_vocabulary, read_annotations
from regionspot.eval.config import EvalConfig, Method, check_eval_config
from regionspot.eval.evaluator import DetectionEvaluator, fixed_ap_evaluator, fixed_ap_metrics, is_federated
from regionspot.eval.image_run import (
    EXAMPLE_REGIONS,
    ImageOutput,
    RunSetup,
    RunTally,
    build_setup,
    load_for_run,
    single_process,
)
from regionspot.eval.jobs import BoxSource, ImageJob, dataset_jobs, default_image_folder
from regionspot.eval.output_shards import (
    Picture,
    json_list_file,
    predict_into_shards,
    read_outputs,
    run_fingerprint,
    shard_folder,
)
from regionspot.eval.protocol import (
    FIXED_AP_SECTIONS,
    ap_section,
    category_index,
    check_ground_truth,
    detections_cap,
    evaluator_image_cap,
    evaluator_settings,
    fixed_ap_text,
    frequency_tags,
    iou_types,
    rules_name,
    stored_pairs,
    zero_area_text,
)
from regionspot.eval.report import markdown_report, summary_text, write_report_files
from regionspot.eval.sharding import world_description
from regionspot.model.loader import describe_model
from regionspot.processes import DistributedContext

if TYPE_CHECKING:
    from regionspot.model.loader import Model

METHOD_TEXT = {
    "regionspot": "regionspot (SAM tokens + CLIP memory + fusion head; scores by fusion.score_function)",
    "clip-crop": "clip-crop (CLIP embedding of the box crop; softmax over the vocabulary)",
    "clip-mask-crop": "clip-mask-crop (CLIP embedding of the box crop, outside the SAM mask blanked; softmax)",
}


@dataclass
class DatasetInputs:
    """The annotation and what is derived from it. ``vocabulary[i]`` names category
    ``category_ids[i]`` (increasing ids); ``frequencies``: id -> r/c/f or None."""

    annotations: Path
    document: dict[str, Any]
    jobs: list[ImageJob]
    vocabulary: list[str]
    category_ids: list[int]
    frequencies: dict[int, str] | None
    federated: bool


@dataclass
class EvalRun:
    """``document``: what ``metrics.json`` holds; ``files``: the paths written."""

    document: dict[str, Any]
    files: list[Path]


def load_dataset(config: EvalConfig) -> DatasetInputs:
    """Annotation (held to :func:`~regionspot.eval.protocol.check_ground_truth`), images
    (checked to exist), vocabulary, category ids and frequency tags."""
    if config.annotations is None:
        raise ConfigError("an evaluation needs an annotation file (--data ANN.json)")
    path = Path(config.annotations)
    document = read_annotations(path)
    check_ground_truth(document, path, masks=config.masks)
    jobs = dataset_jobs(document, default_image_folder(path, config.images), config.max_images,
                        listed_categories_only=True)
    if not jobs:
        raise DatasetError(f"{path} lists no images")
    categories = sorted(document["categories"], key=lambda category: int(category["id"]))
    vocabulary = dataset_vocabulary(categories, config.vocabulary, str(path))
    frequencies = frequency_tags(categories, config.frequencies, path)
    federated = is_federated(document) if config.protocol.federated is None else config.protocol.federated
    return DatasetInputs(path, document, jobs, vocabulary, category_index(categories), frequencies, federated)


def run_evaluation(config: EvalConfig, *, out: Path | None = None, ctx: DistributedContext | None = None,
                   model: Model | None = None, progress: bool = True) -> EvalRun | None:
    """Predict over the dataset's images (split across processes), evaluate on rank 0, print the
    metrics and, with ``out``, write the reports (see :func:`write_outputs`). ``model``: use this
    model instead of loading ``config.model``. Returns None on ranks other than 0."""
    config = check_eval_config(config)
    ctx = ctx or single_process()
    started = time.perf_counter()
    data = load_dataset(config)
    box_source = BoxSource(config.boxes, data.jobs, auto_config=config.auto)
    source = config.model if model is None else None
    model = model if model is not None else load_for_run(config, ctx)
    config = dataclasses.replace(config, method=config.method or cast(Method, model.method))
    setup = build_setup(config, model, box_source, data.jobs, data.vocabulary, data.category_ids)
    setup.stored_pairs = stored_pairs(config.protocol.pairs_per_image,
                                      evaluator_image_cap(data.federated, config.protocol.max_dets_per_image),
                                      keep_all=bool(config.protocol.fixed_ap_budget or config.save_detections))
    loaded = time.perf_counter()
    with shard_folder(ctx, out / "shards" if out is not None else None) as folder:  # kept if this fails
        fingerprint = None if out is None else run_fingerprint(config, data.jobs, data.vocabulary,
                                                               data.category_ids, model, ctx.world_size)
        examples = predict_into_shards(folder, data.jobs, setup, config, ctx, fingerprint=fingerprint,
                                       progress=progress, description=f"eval {config.method}")
        if examples is None:
            return None
        predicted = time.perf_counter()
        outputs = read_outputs(folder, ctx.world_size, len(data.jobs), fingerprint)
        with detections_file(out, config.save_detections) as save:
            sections, evaluators, tally = evaluate_outputs(data, outputs, config, sink=save)
        described = {**describe_model(model, source), "summary": model_summary(
            model, str(config.method), getattr(setup.classifier, "recognizer", model))}
        document = {
            "annotations": str(data.annotations), "protocol": describe_protocol(config, data, setup, model, ctx),
            **sections, "counts": tally.counts(), "config": to_dict(config), "model": described,
            "distributed": world_description(ctx),
            "timing": tally.timing(setup=loaded - started, predict=predicted - loaded,
                                   evaluate=time.perf_counter() - predicted),
        }
        print(summary_text(sections, protocol_line(document["protocol"])))
        files = write_outputs(out, document, evaluators, examples, config, data) if out is not None else []
    return EvalRun(document, files)


def evaluate_outputs(data: DatasetInputs, outputs: Iterable[ImageOutput], config: EvalConfig,
                     sink: Callable[[ImageOutput], None] | None = None
                     ) -> tuple[dict[str, Any], dict[str, DetectionEvaluator], RunTally]:
    """Box (and mask) AP over the images of ``outputs`` (read once, one image at a time; each
    output also goes to ``sink``), and fixed AP when asked: report sections
    ``{"bbox": {"federated", "rules", "metrics", "per_category"}, "segm": ..., "fixed_ap": ...}``,
    the evaluators and the run's totals."""
    protocol = config.protocol
    settings = evaluator_settings(data.federated, protocol.max_dets_per_image, protocol.keep_zero_area)
    evaluators = {iou_type: DetectionEvaluator(data.document, iou_type=iou_type, federated=data.federated,
                                               frequencies=data.frequencies, max_dets=settings.max_dets,
                                               max_dets_per_image=settings.max_dets_per_image,
                                               drop_zero_area=settings.drop_zero_area)
                  for iou_type in iou_types(config.masks)}
    budget = protocol.fixed_ap_budget
    # fixed AP counts every image of its annotation: only the evaluated ones are given
    subset = subset_annotations(data.document, {job.image_id for job in data.jobs}) if budget else None
    fixed = {iou_type: fixed_ap_evaluator(subset, budget, iou_type=iou_type, federated=data.federated,
                                          frequencies=data.frequencies, drop_zero_area=settings.drop_zero_area)
             for iou_type in iou_types(config.masks)} if subset is not None and budget else {}
    tally = RunTally()
    for output in outputs:
        for evaluator in (*evaluators.values(), *fixed.values()):
            evaluator.process(output.image_id, output.detections)
        tally.add(output)
        if sink is not None:
            sink(output)
    sections: dict[str, Any] = {iou_type: ap_section(evaluator, settings.rules)
                                for iou_type, evaluator in evaluators.items()}
    for iou_type, evaluator in fixed.items():
        sections[FIXED_AP_SECTIONS[iou_type]] = {"budget": budget, "metrics": fixed_ap_metrics(evaluator)}
    return sections, evaluators, tally


@contextmanager
def detections_file(out: Path | None, save: bool) -> Iterator[Callable[[ImageOutput], None] | None]:
    """With ``out`` and ``save``: a sink that writes each image's detections to
    ``out/results.json`` (one COCO results list, streamed; in place only once complete)."""
    if out is None or not save:
        yield None
        return
    with json_list_file(out / "results.json") as append:

        def write(output: ImageOutput) -> None:
            for detection in output.detections:
                append(detection)

        yield write


def subset_annotations(document: dict[str, Any], image_ids: set[int]) -> dict[str, Any]:
    """The annotation restricted to ``image_ids`` (images and their annotations; categories
    kept), so that fixed AP, which counts every image of the annotation, sees only those."""
    return {**document, "images": [image for image in document["images"] if int(image["id"]) in image_ids],
            "annotations": [a for a in document["annotations"] if int(a["image_id"]) in image_ids]}


def describe_protocol(config: EvalConfig, data: DatasetInputs, setup: RunSetup, model: Model,
                      ctx: DistributedContext) -> dict[str, Any]:
    """The protocol in words, stated at the top of every report (below the model, see
    :func:`model_summary`)."""
    protocol = config.protocol
    total = len(data.document["images"])
    score = "class score x proposal score" if protocol.proposal_scores else "class score (proposal scores unused)"
    return {
        "method": method_text(str(config.method), model),
        "boxes": setup.box_source.describe(),
        "prompt": prompt_text(config),
        "templates": templates_text(model),
        "vocabulary": f"{len(data.vocabulary)} categories of the annotation, in id order"
                      + (f" (names from {config.vocabulary})" if config.vocabulary else ""),
        "pairs_per_box": protocol.pairs_per_box or f"up to {setup.classes_per_box} (all categories)",
        "pairs_per_image": f"{protocol.pairs_per_image} best (box, category) pairs by {score}"
                           + (f" (the best {setup.stored_pairs} stored: all the evaluator keeps)"
                              if (setup.stored_pairs or protocol.pairs_per_image) < protocol.pairs_per_image else ""),
        "detections_cap": detections_cap(data.federated, protocol.max_dets_per_image),
        "rules": rules_name(data.federated),
        "frequency_groups": "APr/APc/APf from " + (config.frequencies or "the annotation")
                            if data.frequencies else "none (no LVIS frequency tags)",
        "images": f"{len(data.jobs)} of {total}"
                  + (" (the first by id, --max-images)" if len(data.jobs) < total else ""),
        "masks": "SAM masks of the box prompts (mask AP)" if config.masks else "no (box AP only)",
        "zero_area": zero_area_text(data.federated, protocol.keep_zero_area),
        "fixed_ap": (fixed_ap_text(protocol.fixed_ap_budget, config.masks) if protocol.fixed_ap_budget
                     else "not computed"),
        "processes": ctx.world_size,
    }


def model_summary(model: Model, method: str, recognizer: object) -> dict[str, str]:
    """What answered, for the top of the report: ``checkpoint`` (path or Hub id; "none: ..."
    without one), ``method``, ``head`` (trained, untrained or none), the ``SAM`` and ``CLIP``
    backbones, and ``inputs`` (the answering recognizer's input mode; ``native`` when its
    config has none, as the zero-shot recognizer's)."""
    config = model.config
    clip = f"`{config.clip.name_or_path}`" + ("" if config.clip.enabled else " (vision tower off: clip.enabled=false)")
    inputs = getattr(getattr(recognizer, "config", None), "inputs", "native")
    return {"checkpoint": checkpoint_text(model, method), "method": method, "head": head_text(model, method),
            "SAM": f"`{config.sam.name_or_path}`", "CLIP": clip, "inputs": str(inputs)}


def checkpoint_text(model: Model, method: str) -> str:
    """Where the weights come from: the checkpoint as given (a folder, a Hub id or the authors'
    file), or what answers without one."""
    origin = model.origin
    if origin.get("head") not in ("checkpoint", "official"):  # a crop baseline uses no head at all
        untrained = origin.get("head") == "untrained" and method == "regionspot"
        return "none: untrained head (random weights)" if untrained else "none: zero-shot recognizer"
    where = str(origin["checkpoint"])
    if origin["head"] == "official":
        text = f"`{where}` (the authors' RegionSpot-{str(origin['variant']).upper()} release, converted in memory)"
    else:
        text = f"`{where}`" + ("" if Path(where).exists() else " (Hugging Face Hub id)")
    return text if method == "regionspot" else f"{text}; only its SAM and CLIP are used ({method} has no head)"


def head_text(model: Model, method: str) -> str:
    """Whether a trained head answers."""
    if method != "regionspot":
        return f"none ({method}: CLIP zero-shot on each region's crop)"
    head = model.origin.get("head")
    if head == "untrained":
        return "UNTRAINED: random weights, so the names are meaningless (the masks are SAM's)"
    return "trained" + (" (the authors' released weights)" if head == "official" else "")


def method_text(method: str, model: Model) -> str:
    """The method in words, with the head's actual score function and CLIP vision (or none)."""
    text = METHOD_TEXT[method]
    if method == "regionspot":
        text = text.replace("fusion.score_function", f"{model.score_kind} (fusion.score_function)")
        if model.image_encoder is None:
            text = text.replace("CLIP memory", "no CLIP vision (clip.enabled=false)")
    return text


def prompt_text(config: EvalConfig) -> str:
    if config.method != "regionspot":
        return f"{config.prompt} (no effect: a crop baseline embeds each box on its own)"
    return {"together": "together (an image's boxes go through the head together and attend to each other)",
            "alone": "alone (each box goes through the head on its own)"}[config.prompt]


def templates_text(model: Model) -> str:
    text = model.text_embedder.describe()
    if text.get("kind") == "clip_text":
        return f"{text['templates']} ({text['num_templates']} prompt template(s) averaged)"
    return f"precomputed text bank {text.get('path', '?')} (its own prompts)"


def protocol_line(protocol: dict[str, Any]) -> str:
    """The protocol's main points on one line, printed above the metrics."""
    return (f"{protocol['method'].split(' ')[0]} on {protocol['images']} images; boxes: "
            f"{protocol['boxes'].split(' (')[0]}; prompt {protocol['prompt'].split(' ')[0]}; "
            f"{protocol['pairs_per_image']}; {protocol['detections_cap']}")


def write_outputs(out: Path, document: dict[str, Any], evaluators: dict[str, DetectionEvaluator],
                  examples: dict[int, Picture], config: EvalConfig, data: DatasetInputs) -> list[Path]:
    """metrics.json, report.md (the model first, then the protocol), per_category.csv,
    pr_curves_<bbox|segm>.png, examples/*.png (ground truth beside the predictions) and, with
    ``config.save_detections``, results.json (all detections, COCO results)."""
    from regionspot.eval.examples import Example, image_truths, write_example_images
    from regionspot.eval.plots import plot_pr_curves

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for iou_type, evaluator in evaluators.items():
        assert evaluator.result is not None
        files.append(plot_pr_curves(evaluator.result, evaluator.frequencies, out / f"pr_curves_{iou_type}.png",
                                    title=f"{config.method}, {data.annotations.name}"))
    drawn = [job.image_id for job in data.jobs if job.image_id in examples]  # in the dataset's order
    truths = image_truths(data.document, drawn, data.category_ids)
    pictures_of = [Example(examples[image_id][0], examples[image_id][1], truths[image_id],
                           regions=examples[image_id][2]) for image_id in drawn]
    files += write_example_images(pictures_of, out / "examples", max_regions=EXAMPLE_REGIONS)
    if config.save_detections:
        files.append(out / "results.json")  # written as the images were evaluated (detections_file)
    pictures = [f"![{path.stem}]({path.relative_to(out).as_posix()})" for path in files if path.suffix == ".png"]
    report = markdown_report(f"Evaluation: {config.method} on {data.annotations.name}", document["protocol"],
                             document, model=document["model"]["summary"], extra=[
        "## Counts", "", *[f"- {k.replace('_', ' ')}: {v}" for k, v in document["counts"].items()], "",
        "## Timing", "", *[f"- {k}: {v}" for k, v in document["timing"].items()], "", "## Pictures", "", *pictures])
    files = write_report_files(out, document, report) + files
    print(f"wrote {out}: " + ", ".join(path.relative_to(out).as_posix() for path in files))
    return files

"""``regionspot predict`` end to end on a real photo (MobileSAM + tiny CLIP head checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from regionspot.cli.main import main
from regionspot.ops.masks import decode_rle
from regionspot.results import RegionResult
from regionspot.viz import region_color

PHOTO = "000000000009.jpg"


@pytest.fixture(scope="module")
def checkpoint(mobile_sam_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mobile_sam_model.save_pretrained(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def photo(coco_sample: Path) -> Path:
    return coco_sample / "images" / PHOTO


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def test_predict_writes_json_and_pictures(checkpoint: Path, photo: Path, tmp_path: Path, capsys) -> None:
    out, viz, attention = tmp_path / "out.json", tmp_path / "out.png", tmp_path / "attention.png"
    code = run_cli("predict", photo, "--boxes", "10,20,200,240;300,40,420,300", "--vocab", "cat,dog,bowl",
                   "--checkpoint", checkpoint, "--out", out, "--viz", viz, "--topk", "2", "--attention", attention)
    assert code == 0
    assert f"wrote {attention}" in capsys.readouterr().err
    document = json.loads(out.read_text())
    height, width = np.asarray(Image.open(photo)).shape[:2]
    assert document["image"]["height"] == height and document["image"]["width"] == width
    assert document["vocabulary"] == ["cat", "dog", "bowl"]
    assert len(document["regions"]) == 2
    region = document["regions"][0]
    assert region["box"] == [10, 20, 200, 240]
    assert region["label"] in document["vocabulary"] and 0 <= region["score"] <= 1
    assert region["topk"][0]["label"] == region["label"] and len(region["topk"]) == 2
    assert decode_rle([region["mask"]])[0].shape == (height, width)
    assert "mask_score" in region
    assert document["model"]["method"] == "regionspot" and document["model"]["origin"]["checkpoint"] == str(checkpoint)
    picture = np.asarray(Image.open(viz).convert("RGB"))
    assert picture.shape[1] == width and height < picture.shape[0] < height + 60  # the photo, then its caption
    assert picture[height:].mean() < 100  # the dark caption strip naming the method
    assert "attention" not in region  # the JSON document does not change with --attention
    # the attention figure: one panel per region, the photo under a blended heat map
    scale = min(1.0, 480 / max(height, width))  # draw_attention_figure's default panel size
    panel_w, panel_h = round(width * scale), round(height * scale)
    figure = np.asarray(Image.open(attention).convert("RGB"))
    assert figure.shape[1] == 2 * panel_w + 6  # two panels side by side, 6 px apart ...
    assert panel_h + 10 < figure.shape[0] < panel_h + 60  # ... above the colour bar
    photo_small = np.asarray(Image.open(photo).convert("RGB").resize((panel_w, panel_h)), float)
    assert np.abs(figure[:panel_h, :panel_w].astype(float) - photo_small).mean() > 10


def test_predict_coco_format_with_builtin_vocabulary_and_box_file(checkpoint, photo, tmp_path) -> None:
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"boxes": [[10, 20, 200, 240]]}))
    out = tmp_path / "results.json"
    assert run_cli("predict", photo, "--boxes", boxes, "--vocab", "coco", "--checkpoint", checkpoint,
                   "--format", "coco", "--out", out, "--topk", "3") == 0
    results = json.loads(out.read_text())
    assert len(results) == 3
    assert {r["image_id"] for r in results} == {9}
    coco_ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31,
                32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
                58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86,
                87, 88, 89, 90}
    assert all(r["category_id"] in coco_ids for r in results)
    assert results[0]["bbox"] == [10, 20, 190, 220] and "segmentation" in results[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--boxes", "10,20,5,240", "--vocab", "cat"], "inverted"),
    (["--boxes", "", "--vocab", "cat"], "no boxes"),
    (["--boxes", "1,2,3", "--vocab", "cat"], "4 comma-separated"),
    (["--boxes", "10,20,200,240", "--vocab", "cat,Cat"], "uplicate"),
    (["--boxes", "missing.json", "--vocab", "cat"], "not found"),
])
def test_user_errors_exit_2_with_one_line(checkpoint, photo, capsys, args, message) -> None:
    assert run_cli("predict", photo, "--checkpoint", checkpoint, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_corrupt_image_and_missing_checkpoint(checkpoint, photo, tmp_path, capsys) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"definitely not an image")
    assert run_cli("predict", broken, "--boxes", "0,0,5,5", "--vocab", "cat", "--checkpoint", checkpoint) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert run_cli("predict", photo, "--boxes", "0,0,5,5", "--vocab", "cat", "--checkpoint", tmp_path / "no") == 2
    assert "error:" in capsys.readouterr().err


def test_topk_must_be_positive(checkpoint, photo) -> None:
    with pytest.raises(SystemExit):
        run_cli("predict", photo, "--boxes", "0,0,5,5", "--vocab", "cat", "--checkpoint", checkpoint, "--topk", "0")


def test_attention_without_clip_vision_is_a_clear_error(mobile_sam_checkpoint, tiny_clip_dir, text_cache_dir,
                                                        photo, tmp_path, capsys) -> None:
    code = run_cli("predict", photo, "--boxes", "10,20,200,240", "--vocab", "cat", "--sam", mobile_sam_checkpoint,
                   "--clip", tiny_clip_dir, "--untrained", "--attention", tmp_path / "a.png",
                   "--set", "clip.enabled=false", f"text.cache_dir={text_cache_dir}")
    assert code == 2
    err = capsys.readouterr().err
    assert "error: --attention needs a RegionSpot head with the CLIP vision tower" in err and "Traceback" not in err
    assert not (tmp_path / "a.png").exists()


@pytest.mark.parametrize("option", ["--attention", "--viz"])
def test_figure_without_picture_suffix_fails_before_loading(photo, tmp_path, capsys, option: str) -> None:
    code = run_cli("predict", photo, "--boxes", "10,20,200,240", "--vocab", "cat", "--checkpoint",
                   tmp_path / "not-loaded", option, tmp_path / "figure.notapicture")
    assert code == 2
    assert f"error: {option}" in capsys.readouterr().err


def test_no_model_flag_is_the_zero_shot_recognizer(mobile_sam_checkpoint, tiny_clip_dir, text_cache_dir, photo,
                                                   tmp_path, capsys) -> None:
    out = tmp_path / "out.json"
    assert run_cli("predict", photo, "--boxes", "10,20,200,240;300,40,420,300", "--vocab", "cat,dog,bowl",
                   "--sam", mobile_sam_checkpoint, "--clip", tiny_clip_dir, "--out", out, "--no-progress",
                   "--set", f"text.cache_dir={text_cache_dir}") == 0
    document = json.loads(out.read_text())
    assert document["model"] == {"method": "clip-mask-crop", "trained": False, "origin": {"head": "none (zero-shot)"},
                                 "score_kind": "softmax", "inputs": "native"}
    assert all(abs(sum(t["score"] for t in region["topk"]) - 1.0) < 1e-5 for region in document["regions"])
    assert "model: zero-shot clip-mask-crop" in capsys.readouterr().err


@pytest.mark.slow  # 16x16-point proposals on real MobileSAM (~11 s); see tests/proposals and test_browser
def test_boxes_auto_names_sam_proposals(checkpoint, photo, tmp_path, capsys) -> None:
    out = tmp_path / "out.json"
    assert run_cli("predict", photo, "--boxes", "auto", "--max-boxes", "3", "--vocab", "cat,dog", "--checkpoint",
                   checkpoint, "--out", out, "--no-masks") == 0
    document = json.loads(out.read_text())
    assert 1 <= len(document["regions"]) <= 3
    assert "proposals from SAM's point grid" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--out", "--viz"])
def test_unwritable_outputs_fail_before_loading_anything(photo, tmp_path, capsys, option: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    for target, message in ((folder, "is a folder"), (blocker / "out.png", "is a file, so nothing")):
        code = run_cli("predict", photo, "--boxes", "10,20,200,240", "--vocab", "cat", "--checkpoint",
                       tmp_path / "not-loaded", option, target)
        err = capsys.readouterr().err
        assert code == 2 and f"error: {option}" in err and message in err and "Traceback" not in err


def test_overflowing_numbers_in_a_boxes_file_are_a_user_error(photo, tmp_path, capsys) -> None:
    boxes = tmp_path / "boxes.json"
    for text in ("[[" + "9" * 5000 + ", 0, 10, 10]]", "[[1e400, 0, 10, 10]]", "[[" + "9" * 400 + ", 0, 10, 10]]"):
        boxes.write_text(text)
        assert run_cli("predict", photo, "--boxes", boxes, "--vocab", "cat", "--checkpoint", tmp_path / "x") == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "Traceback" not in err


def test_a_name_outside_the_heads_text_bank_is_one_error_line(mobile_sam_checkpoint, tiny_clip_dir, shared_data,
                                                              photo, tmp_path, capsys) -> None:
    from regionspot.config import TextConfig
    from regionspot.model.regionspot import RegionSpot

    bank = shared_data / "text-banks" / "coco_clip-vit-b32_a-name.npy"
    head = RegionSpot.from_backbones(sam=str(mobile_sam_checkpoint), clip=str(tiny_clip_dir),
                                     text=TextConfig(bank=str(bank)), clip_vision=False).save_pretrained(tmp_path / "h")
    code = run_cli("predict", photo, "--boxes", "10,20,200,240", "--vocab", "cat,unicornfish", "--checkpoint", head)
    err = capsys.readouterr().err
    assert code == 2 and "error: 1 name(s) not in text bank" in err and "unicornfish" in err
    assert "Traceback" not in err


def test_points_name_the_objects_under_the_clicks(mobile_sam_checkpoint, tiny_clip_dir, text_cache_dir, photo,
                                                  tmp_path, capsys) -> None:
    from regionspot.ops.boxes import masks_to_boxes
    from regionspot.ops.masks import decode_rle

    out = tmp_path / "out.json"
    assert run_cli("predict", photo, "--points", "320,240;100,300", "--vocab", "cat,dog,bowl", "--sam",
                   mobile_sam_checkpoint, "--clip", tiny_clip_dir, "--out", out, "--no-progress",
                   "--set", f"text.cache_dir={text_cache_dir}") == 0
    regions = json.loads(out.read_text())["regions"]
    assert len(regions) == 2
    masks = decode_rle([region["mask"] for region in regions])
    assert masks[0][240, 320] and masks[1][300, 100]  # each mask holds its click
    np.testing.assert_allclose([region["box"] for region in regions], masks_to_boxes(masks))
    capsys.readouterr()


def test_regions_of_several_clicks_with_background_clicks(mobile_sam_model, mobile_sam_checkpoint, tiny_clip_dir,
                                                         text_cache_dir, photo, tmp_path, capsys) -> None:
    """'+' joins the clicks of one region and --point-labels marks background clicks: the masks
    are the Python API's for the same nested clicks, and the picture marks the clicks."""
    from regionspot.ops.masks import decode_rle
    from regionspot.viz import draw_regions

    out, viz = tmp_path / "out.json", tmp_path / "out.png"
    common = ["--vocab", "cat,dog,bowl", "--sam", mobile_sam_checkpoint, "--clip", tiny_clip_dir, "--no-progress",
              "--set", f"text.cache_dir={text_cache_dir}"]
    assert run_cli("predict", photo, "--points", "320,240+420,240;100,300", "--point-labels", "1+0;1", "--out", out,
                   "--viz", viz, *common) == 0
    predictor = mobile_sam_model.predictor()
    predictor.set_image(photo)
    expected = predictor.predict(points=[[[320, 240], [420, 240]], [[100, 300]]], point_labels=[[1, 0], [1]],
                                 vocabulary=["cat", "dog", "bowl"])
    masks = decode_rle([region["mask"] for region in json.loads(out.read_text())["regions"]])
    assert expected.masks is not None and np.array_equal(masks, expected.masks)
    drawn = np.asarray(Image.open(viz).convert("RGB"))
    bare = np.asarray(draw_regions(photo, expected.boxes, expected.labels, expected.scores, expected.masks))
    changed = (drawn[:bare.shape[0]] != bare).any(axis=-1)
    for x, y in ((320, 240), (420, 240), (100, 300)):  # a marker at each click, the background one too
        assert changed[y - 3:y + 4, x - 3:x + 4].any(), (x, y)
    capsys.readouterr()


@pytest.mark.parametrize(("arguments", "message"), [
    (["--points", "9000,10"], "error: point 0 of region 0 (9000, 10) lies outside the 640x"),
    (["--points", "10;20"], "error: point 0 '10' must be 2 comma-separated numbers x,y"),
    (["--points", "10,20+30,40", "--point-labels", "1"], "error: point_labels must match the points"),
    (["--points", "10,20", "--point-labels", "0"], "error: region 0 has no foreground click"),
    (["--boxes", "1,2,30,40", "--point-labels", "1"], "error: --point-labels needs --points"),
])
def test_bad_points_are_one_error_line_before_loading(photo, tmp_path, capsys, arguments, message) -> None:
    assert run_cli("predict", photo, *arguments, "--vocab", "cat", "--checkpoint", tmp_path / "not-loaded") == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_masks_name_the_given_regions_as_the_python_api_does(mobile_sam_model, checkpoint, photo, tmp_path,
                                                              capsys) -> None:
    """--masks (a label PNG): the CLI's regions are the Python API's for the same masks: each box
    its mask's tight box, each mask the given one, the same labels and scores; the picture tints them."""
    from regionspot.ops.boxes import masks_to_boxes

    height, width = np.asarray(Image.open(photo)).shape[:2]
    rows, cols = np.mgrid[0:height, 0:width]
    masks = np.stack([(rows - 300) ** 2 + (cols - 200) ** 2 < 60 ** 2,  # a disc: its box is not the mask
                      (rows >= 40) & (rows < 200) & (cols >= 350) & (cols < 600)])
    labels = np.where(masks[0], 4, np.where(masks[1], 9, 0)).astype(np.uint8)  # label 4 before label 9
    Image.fromarray(labels, mode="L").save(tmp_path / "labels.png")
    out, viz = tmp_path / "out.json", tmp_path / "out.png"
    assert run_cli("predict", photo, "--masks", tmp_path / "labels.png", "--vocab", "cat,dog,bowl", "--checkpoint",
                   checkpoint, "--out", out, "--viz", viz, "--topk", "3", "--no-progress") == 0
    regions = json.loads(out.read_text())["regions"]
    predictor = mobile_sam_model.predictor()
    predictor.set_image(np.asarray(Image.open(photo).convert("RGB")))
    expected = predictor.predict(masks=masks, vocabulary=["cat", "dog", "bowl"], topk=3).to_dict()["regions"]
    assert [r["box"] for r in regions] == [e["box"] for e in expected] == masks_to_boxes(masks).tolist()
    assert [r["mask"] for r in regions] == [e["mask"] for e in expected]
    np.testing.assert_array_equal(decode_rle([r["mask"] for r in regions]), masks)
    assert [[t["label"] for t in r["topk"]] for r in regions] == [[t["label"] for t in e["topk"]] for e in expected]
    np.testing.assert_allclose([[t["score"] for t in r["topk"]] for r in regions],
                               [[t["score"] for t in e["topk"]] for e in expected], atol=1e-5)
    picture = np.asarray(Image.open(viz).convert("RGB"))[:height].astype(int)
    original = np.asarray(Image.open(photo).convert("RGB")).astype(int)
    assert np.abs(picture[300, 200] - original[300, 200]).sum() > 30  # inside the disc: tinted
    assert np.abs(picture[250, 250] - original[250, 250]).sum() < 30  # its box's corner, outside it: not
    capsys.readouterr()


def test_boxes_and_points_together_are_refused(photo, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli("predict", photo, "--boxes", "1,2,30,40", "--points", "5,5", "--vocab", "cat")
    assert exited.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


# --- --min-score and --max-labels ---------------------------------------------------------------------


class _FakePredictor:
    """Answers ``predict`` with fixed scores (one per box, in box order) and the runner-up name
    0.1 below; masks are the boxes; attention maps are 2x2."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores
        self.image_size = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        self.image_size = image.shape[:2]

    def predict(self, *, boxes: np.ndarray, vocabulary: list[str], topk: int, with_masks: bool,
                with_attention: bool, points: object, point_labels: object, masks: object) -> RegionResult:
        scores = np.array(self.scores)
        assert points is None and point_labels is None and masks is None
        masks = np.zeros((len(boxes), *self.image_size), bool)
        for mask, (x1, y1, x2, y2) in zip(masks, np.asarray(boxes, int), strict=True):
            mask[y1:y2, x1:x2] = True
        return RegionResult(boxes=boxes, topk_ids=np.tile([0, 1], (len(boxes), 1)),
                            topk_scores=np.stack([scores, scores - 0.1], axis=1),
                            vocabulary=vocabulary, image_size=self.image_size, masks=masks if with_masks else None,
                            extras={"attention": np.ones((len(boxes), 2, 2), np.float32)} if with_attention else {})


class _FakeModel:
    method, has_attention = "clip-mask-crop", True

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores

    def predictor(self) -> _FakePredictor:
        return _FakePredictor(self.scores)

    def describe(self) -> dict[str, object]:
        return {"method": self.method, "trained": False, "origin": {"head": "none (zero-shot)"},
                "score_kind": "softmax"}


SCORES = [0.9, 0.2, 0.7, 0.5, 0.1]
ROW = ";".join(f"{20 + 120 * i},150,{120 + 120 * i},400" for i in range(5))  # five boxes side by side


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("regionspot.cli.predict_cmd.load_model_from_args", lambda *_: _FakeModel(SCORES))


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--min-score", "1.5", "argument --min-score: 1.5 is not in [0, 1]"),
    ("--min-score", "-0.1", "argument --min-score: -0.1 is not in [0, 1]"),
    ("--min-score", "high", "argument --min-score: 'high' is not a number"),
    ("--max-labels", "0", "argument --max-labels: must be at least 1, got 0"),
    ("--max-labels", "2.5", "argument --max-labels: '2.5' is not an integer"),
])
def test_bad_min_score_and_max_labels_are_one_error_line(photo, capsys, option, value, message) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli("predict", photo, "--boxes", "1,2,30,40", "--vocab", "cat", option, value)
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert exited.value.code == 2 and errors == [f"regionspot predict: error: {message}"]


def test_min_score_drops_regions_from_the_output_and_the_picture(fake_model, photo, tmp_path, capsys) -> None:
    out, viz, coco = tmp_path / "out.json", tmp_path / "out.png", tmp_path / "coco.json"
    assert run_cli("predict", photo, "--boxes", ROW, "--vocab", "cat,dog", "--min-score", "0.5",
                   "--out", out, "--viz", viz) == 0
    assert "--min-score 0.5: kept 3 of 5 regions" in capsys.readouterr().err
    regions = json.loads(out.read_text())["regions"]
    assert [r["score"] for r in regions] == [0.9, 0.7, 0.5]  # the kept regions, in box order
    assert [r["box"][0] for r in regions] == [20, 260, 380]
    picture = np.asarray(Image.open(viz).convert("RGB"))
    tinted = [np.abs(picture[300, x].astype(int) - np.asarray(Image.open(photo))[300, x]).sum() > 30
              for x in (70, 190, 310, 430, 550)]  # the middle of each box's mask
    assert tinted == [True, False, True, True, False]  # dropped regions are not drawn
    assert run_cli("predict", photo, "--boxes", ROW, "--vocab", "cat,dog", "--min-score", "0.5", "--topk", "2",
                   "--format", "coco", "--out", coco) == 0
    pairs = sorted(r["score"] for r in json.loads(coco.read_text()))
    assert pairs == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])  # the runner-up 0.4 of region 0.5 is dropped too


def test_max_labels_tags_only_the_best_regions_and_keeps_the_output(fake_model, photo, tmp_path, capsys) -> None:
    out, viz, attention = tmp_path / "out.json", tmp_path / "out.png", tmp_path / "attention.png"
    assert run_cli("predict", photo, "--boxes", ROW, "--vocab", "cat,dog", "--max-labels", "2", "--out", out,
                   "--viz", viz, "--attention", attention) == 0
    assert len(json.loads(out.read_text())["regions"]) == 5  # the output keeps every region
    picture = np.asarray(Image.open(viz).convert("RGB"))[:149]  # the strip above the boxes holds the tags
    tagged = [bool(np.all(picture == np.asarray(region_color(i), np.uint8), axis=2).sum() > 50) for i in range(5)]
    assert tagged == [True, False, True, False, False]  # the two best: 0.9 and 0.7
    height, width = np.asarray(Image.open(photo)).shape[:2]
    panel_w = round(width * min(1.0, 480 / max(height, width)))
    figure = Image.open(attention).convert("RGB")
    assert figure.width == 2 * panel_w + 6  # two attention panels, for the same two regions ...
    drawn = [bool(np.all(np.asarray(figure) == np.asarray(region_color(i), np.uint8), axis=2).sum() > 50)
             for i in range(5)]
    assert drawn == [True, False, True, False, False]  # ... in their colours of the --viz picture
    capsys.readouterr()


def test_min_score_above_every_region_writes_an_empty_result(fake_model, photo, tmp_path, capsys) -> None:
    out, viz, attention = tmp_path / "out.json", tmp_path / "out.png", tmp_path / "attention.png"
    assert run_cli("predict", photo, "--boxes", ROW, "--vocab", "cat,dog", "--min-score", "0.95", "--out", out,
                   "--viz", viz, "--attention", attention) == 0
    assert json.loads(out.read_text())["regions"] == []
    assert viz.is_file() and not attention.exists()
    assert f"no region left to draw, {attention} not written" in capsys.readouterr().err


def test_min_score_and_max_labels_with_a_real_model(checkpoint, photo, tmp_path, capsys) -> None:
    out, viz = tmp_path / "out.json", tmp_path / "out.png"
    assert run_cli("predict", photo, "--boxes", "10,20,200,240;300,40,420,300;50,250,300,470", "--vocab", "cat,dog",
                   "--checkpoint", checkpoint, "--min-score", "0", "--max-labels", "1", "--out", out, "--viz", viz,
                   "--no-progress") == 0
    assert len(json.loads(out.read_text())["regions"]) == 3
    assert Image.open(viz).width == np.asarray(Image.open(photo)).shape[1]
    capsys.readouterr()

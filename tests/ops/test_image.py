"""Tests for regionspot.ops.image.load_image: every documented conversion and rejection rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from regionspot.ops.image import ImageLoadError, load_image


def _check_canonical(arr: np.ndarray, height: int, width: int) -> None:
    assert arr.shape == (height, width, 3)
    assert arr.dtype == np.uint8
    assert arr.flags.c_contiguous


@pytest.fixture
def coco_jpeg(coco_sample: Path) -> Path:
    return coco_sample / "images" / "000000000009.jpg"


# ---------------------------------------------------------------- files


def test_real_jpeg_from_str_and_path(coco_jpeg: Path) -> None:
    expected = np.asarray(Image.open(coco_jpeg).convert("RGB"))
    for source in (str(coco_jpeg), coco_jpeg):
        arr = load_image(source)
        _check_canonical(arr, 480, 640)
        np.testing.assert_array_equal(arr, expected)


def _two_colour(height: int = 16, width: int = 32) -> np.ndarray:
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = (255, 0, 0)
    arr[:, width // 2 :] = (0, 0, 255)
    return arr


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_applied_for_files(tmp_path: Path, suffix: str) -> None:
    img = Image.fromarray(_two_colour())
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / f"rotated{suffix}"
    img.save(path, exif=exif.tobytes())
    arr = load_image(path)
    _check_canonical(arr, 32, 16)
    # the left (red) half ends up on top, the right (blue) half at the bottom
    assert arr[2, 8, 0] > 200 and arr[2, 8, 2] < 50
    assert arr[-3, 8, 2] > 200 and arr[-3, 8, 0] < 50


def test_exif_orientation_not_applied_to_pil_images() -> None:
    img = Image.fromarray(_two_colour())
    img.getexif()[0x0112] = 6
    _check_canonical(load_image(img), 16, 32)


def test_grayscale_png_file_replicated(tmp_path: Path) -> None:
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    arr = load_image(tmp_path / "grey.png")
    _check_canonical(arr, 4, 5)
    for c in range(3):
        np.testing.assert_array_equal(arr[:, :, c], grey)


def test_16bit_png_file_scaled(tmp_path: Path) -> None:
    grey = np.array([[0, 257, 65535]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    arr = load_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(arr[0, :, 0], [0, 1, 255])
    np.testing.assert_array_equal(arr[..., 0], arr[..., 2])


def test_rgba_png_composited_on_white(tmp_path: Path) -> None:
    rgba = np.array([[[200, 10, 20, 255], [200, 10, 20, 0], [0, 0, 0, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    arr = load_image(tmp_path / "alpha.png")
    _check_canonical(arr, 1, 3)
    np.testing.assert_array_equal(arr[0, 0], [200, 10, 20])  # opaque: unchanged
    np.testing.assert_array_equal(arr[0, 1], [255, 255, 255])  # transparent: white
    np.testing.assert_array_equal(arr[0, 2], [127, 127, 127])  # half black over white


def test_palette_with_transparency_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.save(tmp_path / "pal.png", transparency=0)
    arr = load_image(tmp_path / "pal.png")
    np.testing.assert_array_equal(arr[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(arr[0, 1], [10, 200, 30])


def test_multiframe_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    arr = load_image(tmp_path / "anim.gif")
    assert arr[0, 0, 0] > 200 and arr[0, 0, 2] < 50


# ---------------------------------------------------------------- PIL images


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV", "LAB"])
def test_pil_modes_converted_like_pil(mode: str) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).convert(mode)
    arr = load_image(img)
    _check_canonical(arr, 6, 7)
    np.testing.assert_array_equal(arr, np.asarray(img.convert("RGB")))


def test_cmyk_values() -> None:
    white = load_image(Image.new("CMYK", (1, 1), (0, 0, 0, 0)))
    red = load_image(Image.new("CMYK", (1, 1), (0, 255, 255, 0)))
    np.testing.assert_array_equal(white[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(red[0, 0], [255, 0, 0])


def test_pil_grey_modes() -> None:
    np.testing.assert_array_equal(load_image(Image.new("L", (2, 2), 77))[0, 0], [77, 77, 77])
    np.testing.assert_array_equal(load_image(Image.new("I;16", (2, 2), 65535))[0, 0], [255] * 3)
    np.testing.assert_array_equal(load_image(Image.new("I", (2, 2), 257 * 100))[0, 0], [100] * 3)
    np.testing.assert_array_equal(load_image(Image.new("F", (2, 2), 0.5))[0, 0], [128] * 3)


def test_pil_float_out_of_range_rejected() -> None:
    with pytest.raises(ImageLoadError, match=r"\[0, 1\]"):
        load_image(Image.new("F", (2, 2), 200.0))


def test_pil_int_out_of_range_rejected() -> None:
    with pytest.raises(ImageLoadError, match="65535"):
        load_image(Image.new("I", (2, 2), 70000))


@pytest.mark.parametrize(("mode", "value"), [("LA", (0, 0)), ("PA", (0, 0)), ("RGBA", (9, 9, 9, 0)), ("La", (0, 0))])
def test_pil_transparent_modes_on_white(mode: str, value: tuple[int, ...]) -> None:
    np.testing.assert_array_equal(load_image(Image.new(mode, (2, 2), value))[1, 1], [255, 255, 255])


# ---------------------------------------------------------------- arrays


def test_uint8_array_copied_not_aliased() -> None:
    src = np.full((3, 4, 3), 9, np.uint8)
    arr = load_image(src)
    _check_canonical(arr, 3, 4)
    arr[0, 0, 0] = 200
    assert src[0, 0, 0] == 9


def test_non_contiguous_array_made_contiguous() -> None:
    src = np.zeros((4, 6, 3), np.uint8)[:, ::2]
    assert not src.flags.c_contiguous
    _check_canonical(load_image(src), 4, 3)


@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 1)])
def test_grey_arrays_replicated(shape: tuple[int, ...]) -> None:
    src = np.arange(12, dtype=np.uint8).reshape(shape)
    arr = load_image(src)
    _check_canonical(arr, 3, 4)
    np.testing.assert_array_equal(arr[:, :, 1], src.reshape(3, 4))


def test_rgba_array_composited() -> None:
    src = np.array([[[100, 50, 0, 0], [100, 50, 0, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(load_image(src)[0], [[255, 255, 255], [100, 50, 0]])


def test_float_array_in_unit_range_scaled() -> None:
    src = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(load_image(src)[0, :, 0], [0, 128, 255])
    assert load_image(src.astype(np.float64)).dtype == np.uint8


@pytest.mark.parametrize("values", [[0.0, 255.0], [-0.1, 0.5], [0.0, 1.0001]])
def test_float_array_out_of_range_rejected(values: list[float]) -> None:
    with pytest.raises(ImageLoadError, match=r"\[0, 1\]"):
        load_image(np.array([values], dtype=np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_array_nan_inf_rejected(bad: float) -> None:
    src = np.full((2, 2, 3), 0.5)
    src[1, 1, 1] = bad
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(src)


def test_uint16_array_scaled() -> None:
    src = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(load_image(src)[0, :, 0], [0, 1, 128, 255])


def test_other_int_dtypes() -> None:
    np.testing.assert_array_equal(load_image(np.array([[0, 255]], dtype=np.int64))[0, :, 0], [0, 255])
    for bad in ([[0, 256]], [[-1, 3]]):
        with pytest.raises(ImageLoadError, match=r"0\.\.255"):
            load_image(np.array(bad, dtype=np.int32))


def test_bool_array_rejected() -> None:
    with pytest.raises(ImageLoadError, match="boolean"):
        load_image(np.ones((2, 2), bool))


@pytest.mark.parametrize("shape", [(0, 4, 3), (4, 0), (0, 0, 3)])
def test_empty_array_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("shape", [(5,), (1, 2, 3, 3)])
def test_wrong_dims_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageLoadError, match="dimensions"):
        load_image(np.zeros(shape, np.uint8))


def test_wrong_channel_count_rejected() -> None:
    with pytest.raises(ImageLoadError, match="channels"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageLoadError, match="channel-first"):
        load_image(np.zeros((3, 8, 8), np.uint8))


def test_empty_pil_image_rejected() -> None:
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(Image.new("RGB", (0, 5)))


# ---------------------------------------------------------------- file errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageLoadError, match="not found") as info:
        load_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["a\x00b.jpg", "x" * 5000 + ".jpg"])
def test_impossible_file_name(name: str) -> None:
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(name)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="directory") as info:
        load_image(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(4096), b"", b"hello, not an image\n"])
def test_non_image_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match="not an image") as info:
        load_image(path)
    assert "photo.jpg" in str(info.value)


def test_truncated_jpeg(tmp_path: Path, coco_jpeg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    path = tmp_path / "cut.jpg"
    shutil.copyfile(coco_jpeg, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="corrupt or truncated") as info:
        load_image(path)
    assert "cut.jpg" in str(info.value)


def test_error_is_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"image file not found: .*missing\.png"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize("source", [None, 3, b"bytes", [[1, 2], [3, 4]]])
def test_unsupported_source_type(source: object) -> None:
    with pytest.raises(ImageLoadError, match="unsupported image source"):
        load_image(source)  # type: ignore[arg-type]


# ---------------------------------------------------------------- size guards


def test_max_side(tmp_path: Path, coco_jpeg: Path) -> None:
    assert load_image(coco_jpeg, max_side=640).shape == (480, 640, 3)
    with pytest.raises(ImageLoadError, match="max_side=639") as info:
        load_image(coco_jpeg, max_side=639)
    assert coco_jpeg.name in str(info.value)
    with pytest.raises(ImageLoadError, match="max_side"):
        load_image(np.zeros((10, 20, 3), np.uint8), max_side=19)
    with pytest.raises(ImageLoadError, match="max_side"):
        load_image(Image.new("RGB", (20, 10)), max_side=19)


@pytest.mark.parametrize("bad", [0, -5, 2.5])
def test_max_side_invalid(bad: object) -> None:
    with pytest.raises(ImageLoadError, match="positive integer"):
        load_image(np.zeros((2, 2, 3), np.uint8), max_side=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [300, 100])  # warning range (1x..2x) and error range (> 2x)
def test_decompression_bomb_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (20, 20)).save(path)  # 400 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ImageLoadError, match="decompression bomb") as info:
        load_image(path)
    assert "big.png" in str(info.value)

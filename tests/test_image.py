"""common.core.image: base64 leniency, every image mode, EXIF orientation, bad data, the pixel limit."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import PIL.Image
import PIL.ImageOps

from common.core.errors import RequestError
from common.core.image import Image, decode_base64


def encode(image: PIL.Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gradient(w: int = 32, h: int = 24) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 77)], axis=-1).astype(np.uint8)


# ---------------------------------------------------------------- base64

@given(st.binary(min_size=1, max_size=300), st.sampled_from(["plain", "nopad", "wrapped", "datauri", "urlsafe"]))
@settings(max_examples=200, deadline=None)
def test_base64_variants_round_trip(data, variant):
    text = base64.b64encode(data).decode()
    if variant == "nopad":
        text = text.rstrip("=")
    elif variant == "wrapped":
        text = "\n".join(text[i:i + 76] for i in range(0, len(text), 76)) + "\n"
    elif variant == "datauri":
        text = "data:image/png;base64," + text
    elif variant == "urlsafe":
        text = base64.urlsafe_b64encode(data).decode()
    assert decode_base64(text) == data


@pytest.mark.parametrize("value, fragment", [
    (None, "must be a base64 string"),
    (123, "must be a base64 string"),
    (["abc"], "must be a base64 string"),
    ("", "is empty"),
    ("   ", "is empty"),
    ("abc$def", "not valid base64"),
    ("A", "bad length"),
])
def test_bad_base64(value, fragment):
    with pytest.raises(RequestError, match=fragment):
        decode_base64(value)


# ---------------------------------------------------------------- formats and modes

@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF", "PPM"])
def test_formats_decode_to_rgb(fmt):
    source = gradient()
    image = Image.from_bytes(encode(PIL.Image.fromarray(source), fmt))
    rgb = image.rgb
    assert rgb.dtype == np.uint8 and rgb.shape == (24, 32, 3)
    assert image.size == (32, 24)
    tolerance = 0 if fmt in ("PNG", "BMP", "TIFF", "PPM") else 40
    assert np.abs(rgb.astype(int) - source.astype(int)).mean() <= tolerance


def test_grayscale_palette_and_bilevel():
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = Image.from_bytes(encode(PIL.Image.fromarray(gray, "L"))).rgb
    assert (rgb == gray[:, :, None]).all()

    palette = PIL.Image.fromarray(gradient()).quantize(16)
    rgb = Image.from_bytes(encode(palette)).rgb
    assert rgb.shape == (24, 32, 3)
    assert np.abs(rgb.astype(int) - np.asarray(palette.convert("RGB")).astype(int)).max() == 0

    bilevel = PIL.Image.fromarray((gray > 127).astype(np.uint8) * 255, "L").convert("1")
    rgb = Image.from_bytes(encode(bilevel)).rgb
    assert set(np.unique(rgb)) == {0, 255}


def test_alpha_is_dropped_keeping_colour():
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red
    rgb = Image.from_bytes(encode(PIL.Image.fromarray(rgba, "RGBA"))).rgb
    assert (rgb[..., 0] == 200).all() and (rgb[..., 1:] == 0).all()

    la = PIL.Image.fromarray(np.stack([np.full((5, 5), 90, np.uint8), np.full((5, 5), 10, np.uint8)], -1), "LA")
    assert (Image.from_bytes(encode(la)).rgb == 90).all()

    transparent_palette = PIL.Image.fromarray(gradient()).quantize(8)
    transparent_palette.info["transparency"] = 0
    assert Image.from_bytes(encode(transparent_palette)).rgb.shape == (24, 32, 3)


def test_sixteen_bit_is_scaled():
    values = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    image = PIL.Image.fromarray(values)
    assert image.mode.startswith("I")
    rgb = Image.from_bytes(encode(image)).rgb
    assert rgb[0, :, 0].tolist() == [0, 1, 255, 128]


def test_float_image_is_clipped():
    values = np.array([[-5.0, 10.4, 300.0]], dtype=np.float32)
    rgb = Image.from_bytes(encode(PIL.Image.fromarray(values, "F"), "TIFF")).rgb
    assert rgb[0, :, 0].tolist() == [0, 10, 255]


def test_cmyk_jpeg():
    cmyk = PIL.Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    rgb = Image.from_bytes(encode(cmyk, "JPEG", quality=95)).rgb
    assert rgb[..., 0].mean() > 200 and rgb[..., 1].mean() < 60


@pytest.mark.parametrize("orientation, expected_size", [(1, (32, 24)), (3, (32, 24)), (6, (24, 32)), (8, (24, 32))])
def test_exif_orientation_is_applied(orientation, expected_size):
    source = PIL.Image.fromarray(gradient())
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation
    image = Image.from_bytes(encode(source, "JPEG", exif=exif.tobytes(), quality=95))
    assert image.size == expected_size  # known from the header, before decoding
    rgb = image.rgb
    assert (rgb.shape[1], rgb.shape[0]) == expected_size
    upright = {1: source, 3: source.transpose(PIL.Image.Transpose.ROTATE_180),
               6: source.transpose(PIL.Image.Transpose.ROTATE_270), 8: source.transpose(PIL.Image.Transpose.ROTATE_90)}
    assert np.abs(rgb.astype(int) - np.asarray(upright[orientation]).astype(int)).mean() < 8


# ---------------------------------------------------------------- bad data and limits

def test_not_an_image():
    with pytest.raises(RequestError, match="not an image"):
        Image.from_bytes(b"GIF89a? no, just text")
    with pytest.raises(RequestError, match="not an image"):
        Image.from_bytes(b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(fmt):
    data = encode(PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)), fmt)
    image = Image.from_bytes(data[: len(data) // 2])  # the header is intact
    with pytest.raises(RequestError, match="truncated or corrupt"):
        image.rgb


def test_pixel_limit_refuses_before_decoding(monkeypatch):
    monkeypatch.setenv("IMAGE_MAX_PIXELS", "1000")
    data = encode(PIL.Image.new("L", (100, 100)))
    with pytest.raises(RequestError, match="over the limit of 1000"):
        Image.from_bytes(data)
    monkeypatch.setenv("IMAGE_MAX_PIXELS", "10000")
    assert Image.from_bytes(data).rgb.shape == (100, 100, 3)


def test_decompression_bomb_default_limit():
    # A PNG header claiming 20000×20000 pixels: refused from the header alone.
    bomb = encode(PIL.Image.new("1", (20000, 20000)))
    assert len(bomb) < 200_000
    with pytest.raises(RequestError, match="IMAGE_MAX_PIXELS"):
        Image.from_bytes(bomb)


def test_digest_is_of_the_bytes_as_sent():
    data = encode(PIL.Image.fromarray(gradient()))
    assert Image.from_bytes(data).digest == Image.from_base64(base64.b64encode(data).decode()).digest
    assert len(Image.from_bytes(data).digest) == 64


def test_mean_color_is_the_per_channel_mean():
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:2] = (200, 10, 0)  # top half
    rgb[2:] = (100, 30, 255)
    image = Image.from_bytes(encode(PIL.Image.fromarray(rgb)))
    assert image.mean_color.dtype == np.float32
    assert np.allclose(image.mean_color, [150, 20, 127.5])


def test_memory_limit_counts_decoding_and_the_models_work(monkeypatch):
    image = Image.from_bytes(encode(PIL.Image.new("1", (1024, 1024))))  # 2**20 pixels
    image.require_memory(0)  # 7 MB of decoding, well inside the default 512 MB
    bomb = Image.from_bytes(encode(PIL.Image.new("1", (10000, 10000))))  # within IMAGE_MAX_PIXELS, not in memory
    with pytest.raises(RequestError, match="10000x10000: this function would need about 668 MB"):
        bomb.require_memory(0)
    monkeypatch.setenv("IMAGE_MAX_MEMORY_MB", "10")
    image.require_memory(3)  # 7 + 3 bytes per pixel: exactly the 10 MB allowed
    with pytest.raises(RequestError, match=r"1024x1024: this function would need about 11 MB .* 10 MB "
                                           r"\(IMAGE_MAX_MEMORY_MB\)"):
        image.require_memory(4)


def test_padding_to_an_aspect_ratio_keeps_coordinates():
    from common.core.image import pad_to_aspect, scaled_size

    thin = np.full((4000, 1, 3), 7, np.uint8)
    padded = pad_to_aspect(thin, 8)
    assert padded.shape == (4000, 500, 3) and (padded[:, :1] == thin).all() and (padded == 7).all()
    wide = np.zeros((3, 2000, 3), np.uint8)
    wide[:, :10] = 80
    padded = pad_to_aspect(wide, 100)
    assert padded.shape == (20, 2000, 3) and (padded[:3] == wide).all() and (padded[3:] == 0).all()  # mean is 0.4
    square = np.zeros((30, 40, 3), np.uint8)
    assert pad_to_aspect(square, 8) is square
    assert scaled_size(1, 4000, 0.25) == (1, 1000) and scaled_size(4000, 1, 0.1) == (400, 1)


def test_memory_limit_counts_the_padding_a_model_adds(monkeypatch):
    thin = Image.from_bytes(encode(PIL.Image.new("1", (100_000, 1))))  # 0.1 megapixel, padded to 1:512: 196 rows
    thin.require_memory(45)
    thin.require_memory(0, max_aspect=512)
    with pytest.raises(RequestError, match=r"100000x1: .* about 842 MB for it \(padded to 100000x196\)"):
        thin.require_memory(45, max_aspect=512)


def test_a_full_mask_reply_must_fit_the_memory_limit(monkeypatch):
    from common.core.results import Region
    from common.doors.cvat.replies import interactor_reply

    mask = np.zeros((1024, 1024), bool)  # 12 MB as a JSON list of lists
    mask[10:20, 10:20] = True
    region = Region.from_mask(mask)
    assert len(interactor_reply(region, (1024, 1024), full_mask=True)["mask"]) == 1024
    monkeypatch.setenv("IMAGE_MAX_MEMORY_MB", "10")
    with pytest.raises(RequestError, match=r"full_mask for a 1024x1024 image would take about 12 MB.*leave full_mask"):
        interactor_reply(region, (1024, 1024), full_mask=True)
    # the compact reply is always possible
    assert interactor_reply(region, (1024, 1024), full_mask=False)["shapes"][0]["type"] == "mask"


def test_images_from_pil_and_arrays_share_checks_size_and_digest(monkeypatch):
    source = gradient()
    from_array = Image.from_array(source)
    from_pil = Image.from_pil(PIL.Image.fromarray(source))
    assert from_array.size == from_pil.size == (source.shape[1], source.shape[0])
    assert np.array_equal(from_array.rgb, source) and np.array_equal(from_pil.rgb, source)
    assert from_array.digest == Image.from_array(source.copy()).digest != Image.from_array(source[::-1]).digest
    assert Image.from_array(source[:, :, 0]).rgb.shape == source.shape  # gray becomes RGB
    with pytest.raises(RequestError, match="uint8"):
        Image.from_array(source.astype(np.float32))
    monkeypatch.setenv("IMAGE_MAX_PIXELS", "100")
    for make in (lambda: Image.from_array(source), lambda: Image.from_pil(PIL.Image.fromarray(source))):
        with pytest.raises(RequestError, match="IMAGE_MAX_PIXELS"):
            make()


def pillow_rgb(data: bytes) -> np.ndarray:
    """What Pillow alone decodes (upright), for comparing the OpenCV path with."""
    with PIL.Image.open(io.BytesIO(data)) as picture:
        return np.asarray(PIL.ImageOps.exif_transpose(picture).convert("RGB"))


@pytest.mark.parametrize("name", ["dog.jpg", "giraffe.jpg", "person.jpg", "progressive", "with thumbnail",
                                  "trailing bytes", "rotated"])
def test_jpegs_decode_to_pillows_pixels_on_either_path(data_dir, name):
    """Plain JPEGs go through OpenCV's decoder (the same libjpeg-turbo, twice as fast as Pillow's copy out);
    the pixels, RGB and BGR, are exactly Pillow's, and what OpenCV cannot do the same (a rotation) Pillow does."""
    source = PIL.Image.open(data_dir / "images" / "giraffe.jpg")
    exif = PIL.Image.Exif()
    if name.endswith(".jpg"):
        data = (data_dir / "images" / name).read_bytes()
    elif name == "progressive":
        data = encode(source, "JPEG", quality=90, progressive=True)
    elif name == "with thumbnail":  # an EXIF block holding a small JPEG of its own (its own end marker)
        exif[0x0201] = 1  # JPEGInterchangeFormat: what a camera's thumbnail pointer looks like
        data = encode(source, "JPEG", quality=90, exif=exif.tobytes() + encode(source.resize((32, 24)), "JPEG"))
    elif name == "trailing bytes":
        data = encode(source, "JPEG", quality=90) + b"\0" * 100
    else:
        exif[0x0112] = 6
        data = encode(source, "JPEG", quality=90, exif=exif.tobytes())
    image = Image.from_bytes(data)
    assert (image._opencv_jpeg() is None) == (name == "rotated")
    expected = pillow_rgb(data)
    assert np.array_equal(image.rgb, expected)
    assert np.array_equal(Image.from_bytes(data).bgr, expected[:, :, ::-1])


def test_a_truncated_jpeg_is_refused_on_the_opencv_path_too():
    data = encode(PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)), "JPEG")
    for cut in (data[: len(data) // 2], data[:-2]):  # half of the scan, or only the end marker missing
        image = Image.from_bytes(cut)
        assert image._opencv_jpeg() is None
        with pytest.raises(RequestError, match="truncated or corrupt"):
            image.bgr

import io

import pytest
from PIL import Image

from tests.support.testweb import bomb_hdr, bomb_png
from wit.formats.images import MAX_PIXELS, ImageRefused, header_size


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_accepted_formats_give_their_size_from_the_header(fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (7, 5)).save(buffer, fmt)
    assert header_size(buffer.getvalue()) == (7, 5, fmt)


def encoded(fmt: str, size=(7, 5)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("data", [bomb_hdr(2000), encoded("PPM"), encoded("TGA"), encoded("ICO"),
                                  b"<html>not an image</html>", b""], ids=["hdr", "ppm", "tga", "ico", "html", "empty"])
def test_formats_whose_size_is_not_read_from_a_header_are_refused(data):
    with pytest.raises(ImageRefused) as refused:
        header_size(data)
    assert refused.value.reason == "unsupported_format"


def test_pixel_cap_from_the_header_without_decoding():
    with pytest.raises(ImageRefused) as refused:
        header_size(bomb_png())                       # 30000 x 30000: Pillow's own bomb limit
    assert refused.value.reason == "too_many_pixels"
    with pytest.raises(ImageRefused) as refused:
        header_size(encoded("PNG", (100, 100)), max_pixels=9_999)
    assert refused.value.reason == "too_many_pixels" and "100x100" in str(refused.value)
    assert header_size(encoded("PNG", (100, 100)), max_pixels=10_000)[:2] == (100, 100)
    assert MAX_PIXELS == Image.MAX_IMAGE_PIXELS


def test_a_broken_header_is_undecodable():
    with pytest.raises(ImageRefused) as refused:
        header_size(encoded("PNG")[:20])
    assert refused.value.reason == "undecodable_image"

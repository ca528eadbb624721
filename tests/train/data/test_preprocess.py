"""Image decoding (`train.data.preprocess`): the pixel cap applied from the header, the
undecodable refused, the crop where asked."""

from __future__ import annotations

import pytest

from wit.formats.images import ImageRefused


def test_decoding_caps_pixels_from_the_header_and_crops_where_asked():
    import io

    import numpy as np
    from PIL import Image

    from train.data import preprocess as images

    buf = io.BytesIO()
    Image.new("RGB", (3000, 2000), (10, 20, 30)).save(buf, "PNG")
    with pytest.raises(ImageRefused, match="over the 1,000,000-pixel cap") as e:
        images.decode(buf.getvalue(), 32, max_pixels=1_000_000)
    assert e.value.reason == "too_many_pixels"
    with pytest.raises(ImageRefused) as e:
        images.decode(b"\xff\xd8\xff\xe0 truncated", 32, max_pixels=10**8)
    assert e.value.reason == "undecodable_image"
    ramp = np.tile(np.arange(128, dtype=np.uint8) * 2, (64, 1))            # 128 wide, 64 high, brighter to the right
    buf = io.BytesIO()
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(buf, "PNG")
    left = images.decode(buf.getvalue(), 32, 10**8, crop=(0.0, 0.0)).float().mean()
    centre = images.decode(buf.getvalue(), 32, 10**8).float().mean()
    right = images.decode(buf.getvalue(), 32, 10**8, crop=(0.999, 0.0)).float().mean()
    assert images.decode(buf.getvalue(), 32, 10**8).shape == (3, 32, 32)
    assert left < centre < right and abs(centre - 127) < 4   # shorter side 64 -> 32: the crop is half the width

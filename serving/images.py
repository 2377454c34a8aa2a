"""Images at the site: decoding a request's PNG or JPEG within limits, and what each image is like.

A camera request is checked before its pixels exist: bytes against `max_bytes`, the header's
width x height against `max_pixels` (a 50 kB PNG can declare 100,000 x 100,000 pixels and ask for
10 GB: a decompression bomb), the format and the mode; then decoded. Every refusal names the
image (`image`, or `images[3]` in a batch) and what was wrong.

The descriptors are what the site ships back for drift beside the model's embedding: the
brightness and contrast of the image and its sharpness (the variance of its Laplacian: a lens
out of focus lowers it long before anyone notices), all on the decoded pixels the model saw.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

from edgewave.serving.bundle import ImageInput
from edgewave.serving.validation import RequestError

FORMATS = ("PNG", "JPEG")
MEDIA_TYPES = (b"image/png", b"image/jpeg")
DESCRIPTORS = ("brightness", "contrast", "sharpness")
EMBEDDING_PREFIX = "embedding_"  # the embedding's columns in a sample window: embedding_0, embedding_1, …


def decode(data: bytes, schema: ImageInput, where: str = "image") -> np.ndarray:
    """uint8 [height, width, channels] of one encoded image, or a RequestError naming `where`."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > schema.max_bytes:
        raise RequestError(413, f"{where}: {len(data)} bytes, more than the {schema.max_bytes} an image may have")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise RequestError(415, f"{where}: not a PNG or JPEG image") from None
    with image:
        width, height = image.size
        if width * height > schema.max_pixels:
            raise RequestError(413, f"{where}: {width}x{height} pixels, more than the {schema.max_pixels} an image "
                               "may have (a decompression bomb is refused before decoding)")
        far = [f"{axis} {got} (trained at {want})" for axis, got, want in
               (("width", width, schema.width), ("height", height, schema.height))
               if abs(got - want) > schema.size_tolerance * want]
        if far:
            raise RequestError(422, f"{where}: {', '.join(far)}, beyond the size tolerance "
                               f"{schema.size_tolerance:g}: another camera or a wrong crop")
        if image.mode != schema.mode:
            raise RequestError(422, f"{where}: mode {image.mode}; the model takes {schema.channels} channel(s) "
                               f"(mode {schema.mode})")
        try:
            image.load()
            pixels = np.asarray(image, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as exc:  # truncated data, a broken stream
            raise RequestError(422, f"{where}: the image does not decode ({exc})") from None
    return pixels.reshape(height, width, schema.channels)


def decode_batch(encoded: object, schema: ImageInput) -> tuple[list[np.ndarray], list[bytes]]:
    """The `images` array of a JSON batch (base64 strings of PNG or JPEG files): the decoded images and
    their files."""
    if not isinstance(encoded, list):
        raise RequestError(422, f"images: expected an array of base64 strings, got {type(encoded).__name__}")
    if not encoded:
        raise RequestError(422, "images: empty batch; send at least one image")
    if len(encoded) > schema.max_batch:
        raise RequestError(413, f"images: batch of {len(encoded)} images exceeds the maximum of {schema.max_batch}")
    images, files = [], []
    for i, item in enumerate(encoded):
        if not isinstance(item, str):
            raise RequestError(422, f"images[{i}]: expected a base64 string, got {type(item).__name__}")
        try:
            data = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(422, f"images[{i}]: not valid base64") from None
        images.append(decode(data, schema, f"images[{i}]"))
        files.append(data)
    return images, files


def descriptors(images: np.ndarray) -> np.ndarray:
    """float32 [n, 3]: brightness and contrast (mean and spread of the pixels, in [0, 1]) and sharpness
    (the variance of the 4-neighbour Laplacian, in units of full scale squared x 100)."""
    x = images.astype(np.float32) / 255.0
    gray = x.mean(axis=3)
    laplacian = (gray[:, 1:-1, :-2] + gray[:, 1:-1, 2:] + gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1]
                 - 4 * gray[:, 1:-1, 1:-1])
    return np.column_stack([x.mean(axis=(1, 2, 3)), x.std(axis=(1, 2, 3)),
                            laplacian.var(axis=(1, 2)) * 100]).astype(np.float32)

"""How many pixels a picture may have before anything decodes it (decompression bombs).

A JPEG or PNG header may claim any size up to 65535 x 65535 (JPEG) or 2^31 x 2^31 (PNG) in a few
hundred bytes: OpenCV then allocates width x height x 3 bytes before it finds the data is not there
(a header claiming 32768 x 32000 costs 3.1 GB). So every step that decodes a picture reads its size
from the header first (`frame_size`, `picture_size`) and refuses one over `max_image_pixels()`.

The limit: MAX_IMAGE_PIXELS, 8192 x 8192 = 67,108,864 pixels (192 MiB decoded as 8-bit BGR), unless
the environment variable POSE_MAX_IMAGE_PIXELS or a step's --max-image-pixels says otherwise. AI
Challenger's pictures are camera and web photos of a few megapixels, far below; shard's pod has 4
GiB (pipeline/dag.py) and decodes up to one picture per core (2), so two pictures at the limit with
their crops stay under 1 GiB.
"""

import os
import struct
from collections.abc import Callable

MAX_IMAGE_PIXELS = 8192 * 8192
ENVIRONMENT = "POSE_MAX_IMAGE_PIXELS"

# JPEG start-of-frame markers (C0-CF but DHT C4, JPG C8, DAC CC) and markers without a length.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# How every step decodes a picture: BGR, the stored pixels as they are, EXIF orientation ignored
# (cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION, spelled out so that this module imports no cv2).
# Annotations are in the stored pixels' coordinates: convert reads sizes from the JPEG header (the
# stored size) and tf.io.decode_jpeg, which train and evaluate use, ignores EXIF too; an OpenCV that
# applied the orientation would hand shard a picture rotated against its annotations.
DECODE_FLAGS = 1 | 128


class PictureTooLarge(ValueError):
    """A picture's header claims more pixels than the limit; the message names the picture and the
    limit."""


def max_image_pixels(given: int | None = None) -> int:
    """The limit in force: `given` (a step's option), else $POSE_MAX_IMAGE_PIXELS, else
    MAX_IMAGE_PIXELS."""
    if given is None:
        text = os.environ.get(ENVIRONMENT, "").strip()
        if not text:
            return MAX_IMAGE_PIXELS
        try:
            given = int(text)
        except ValueError:
            raise ValueError(f"{ENVIRONMENT}={text!r} is not a whole number of pixels") from None
    if given <= 0:
        raise ValueError(f"the image pixel limit must be positive, got {given}")
    return given


def too_many_pixels(width: int, height: int, limit: int | None = None) -> str | None:
    """None when width x height is within the limit, else why the picture is refused."""
    limit = max_image_pixels(limit)
    if width * height <= limit:
        return None
    return (
        f"{width}x{height} pixels ({width * height:,}) is over the limit of {limit:,} pixels "
        f"(a decompression bomb; the limit is ${ENVIRONMENT} for every step, convert's "
        f"--max-image-pixels for convert alone)"
    )


class HeaderProblem(ValueError):
    """The JPEG header cannot be read; the message says why."""


def frame_size(
    read: Callable[[int, int], bytes], end: int, chunk: int = 8192
) -> tuple[tuple[int, int], int]:
    """((width, height), offset of the first scan's data) of a JPEG, from its header alone.

    read(offset, size) returns the file's bytes (fewer at its end); end is its length. Walks the
    marker segments up to the first start-of-scan, reading `chunk` bytes at a time (an EXIF
    thumbnail may make the header long)."""
    size, scan, _ = frame_info(read, end, chunk)
    return size, scan


def frame_info(
    read: Callable[[int, int], bytes], end: int, chunk: int = 8192
) -> tuple[tuple[int, int], int, int]:
    """frame_size's ((width, height), scan offset) and the EXIF orientation (1 to 8; 1 when the
    header has none): the size is the stored pixels', which every step decodes (DECODE_FLAGS)."""
    orientation = None
    base, head = 0, read(0, chunk)
    if head[:2] != b"\xff\xd8":
        raise HeaderProblem("not a JPEG (no start-of-image marker)")
    position, size = 2, None  # head holds the file's bytes from offset base
    while True:
        if position + 9 > len(head) and base + len(head) < end:
            base += position
            head, position = read(base, chunk), 0
        if position + 4 > len(head):
            raise HeaderProblem("truncated in the JPEG header")
        if head[position] != 0xFF:
            raise HeaderProblem(f"corrupt JPEG header at byte {base + position}")
        code = head[position + 1]
        if code == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if code in _STANDALONE_MARKERS:
            position += 2
            continue
        if code == 0xD9:
            raise HeaderProblem("end-of-image marker before any image data")
        if code in _SOF_MARKERS and position + 9 <= len(head):
            size = (
                int.from_bytes(head[position + 7 : position + 9], "big"),
                int.from_bytes(head[position + 5 : position + 7], "big"),
            )
        length = int.from_bytes(head[position + 2 : position + 4], "big")
        if code == 0xE1 and orientation is None and length > 8:  # APP1: EXIF lives here
            orientation = exif_orientation(read(base + position + 4, length - 2))
        position += 2 + length
        if code == 0xDA:
            if size is None or 0 in size:
                raise HeaderProblem("no frame size before the image data")
            return size, base + position, orientation or 1


def exif_orientation(segment: bytes) -> int | None:
    """The Orientation tag (0x0112) of IFD0 in an APP1 segment's payload: 1 to 8, or None when the
    segment is no EXIF or holds no valid orientation (decoders then treat the picture as stored)."""
    if segment[:6] != b"Exif\x00\x00" or len(segment) < 14:
        return None
    tiff = segment[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return None
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind = struct.unpack_from(order + "HH", tiff, entry)
            if tag == 0x0112 and kind == 3:  # SHORT
                (value,) = struct.unpack_from(order + "H", tiff, entry + 8)
                return value if 1 <= value <= 8 else None
    except struct.error:  # an offset past the segment: a broken EXIF block, ignored as decoders do
        return None
    return None


def picture_size(data: bytes, what: str) -> tuple[int, int]:
    """(width, height) claimed by a JPEG's or PNG's header; PictureTooLarge naming `what` for any
    other format or an unreadable header, since then nothing bounds what a decoder would
    allocate."""
    if data[:8] == _PNG_SIGNATURE:
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise PictureTooLarge(f"{what}: not a readable PNG (no IHDR header)")
        return struct.unpack(">II", data[16:24])
    if data[:2] != b"\xff\xd8":
        raise PictureTooLarge(
            f"{what}: not a JPEG or PNG picture, so its size cannot be bounded before decoding"
        )
    try:
        return frame_size(lambda offset, size: data[offset : offset + size], len(data))[0]
    except HeaderProblem as problem:
        raise PictureTooLarge(f"{what}: {problem}") from None


def check_picture(data: bytes, what: str, limit: int | None = None) -> tuple[int, int]:
    """The picture's (width, height) from its header; PictureTooLarge naming `what` when it claims
    more pixels than the limit (or its size cannot be read)."""
    size = picture_size(data, what)
    problem = too_many_pixels(*size, limit)
    if problem:
        raise PictureTooLarge(f"{what}: {problem}")
    return size


class UnreadablePicture(ValueError):
    """A picture within the limit that OpenCV cannot decode; the message names it."""


def read_picture(path, limit: int | None = None):
    """The picture file at `path` as BGR uint8, its header checked before anything decodes it:
    PictureTooLarge over the limit, UnreadablePicture when OpenCV cannot decode it; OSError as the
    file system gives it."""
    import cv2
    import numpy as np

    with open(path, "rb") as file:
        data = file.read()
    check_picture(data, str(path), limit)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), DECODE_FLAGS)
    if image is None:
        raise UnreadablePicture(f"{path}: not an image cv2 can read")
    return image

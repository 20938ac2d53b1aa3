"""Is a JPEG whole? A structural check of the bytes, for the step that decodes the images (shard).

cv2.imdecode (libjpeg) returns an image for a file whose scan data is corrupt or cut short: it prints
"Corrupt JPEG data" on stderr and fills the rest grey. `problem(data)` walks the marker segments and the
entropy-coded data instead: inside a scan a 0xFF byte may only be followed by 0x00 (stuffing) or the next
restart marker in sequence; the scan must end with a real marker, and the file with end-of-image. Random
or cut scan data breaks one of these rules at once (a few KB of random bytes hold an illegal 0xFF pair with
near certainty; scans of a few hundred bytes may pass). Data after end-of-image is refused unless it is
padding or a second JPEG. Not caught: a scan cut short with a valid end-of-image appended.
"""

import re

# Where the entropy-coded data of a scan ends: 0xFF followed by anything but stuffing or a restart marker.
_SCAN_END = re.compile(rb"\xff(?![\x00\xd0-\xd7])")
_RESTART = re.compile(rb"\xff([\xd0-\xd7])")
# Markers that may follow a scan: SOFn/DHT/DAC (C0-CF), EOI, SOS, DQT, DNL, DRI, DHP, EXP, APPn, COM.
_AFTER_SCAN = (
    frozenset(range(0xC0, 0xD0))
    | {0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF}
    | set(range(0xE0, 0xF0))
    | {0xFE}
)


def problem(data: bytes) -> str | None:
    """None for a structurally whole JPEG, else what is wrong with it."""
    if data[:2] != b"\xff\xd8":
        return "not a JPEG (no start-of-image marker)"
    position, scans, restart_interval = 2, 0, 0
    end = len(data)
    while True:
        while position + 1 < end and data[position] == 0xFF and data[position + 1] == 0xFF:
            position += 1  # fill bytes before a marker
        if position + 2 > end:
            return "truncated (no end-of-image marker)"
        if data[position] != 0xFF:
            return f"corrupt JPEG: no marker at byte {position}"
        code = data[position + 1]
        if code == 0xD9:
            if not scans:
                return "end-of-image marker before any image data"
            trailing = data[position + 2 :]
            # Padding, or a second picture (MPF previews), may follow; anything else means the image data
            # held a stray end-of-image marker, i.e. it is not image data.
            if trailing.strip(b"\x00\xff\r\n") and not trailing.startswith(b"\xff\xd8"):
                return f"{len(trailing)} bytes of data after the end-of-image marker at byte {position}"
            return None
        if code in (0x01, *range(0xD0, 0xD8)):
            position += 2
            continue
        if code not in _AFTER_SCAN:
            return f"corrupt JPEG: invalid marker 0xFF{code:02X} at byte {position}"
        if position + 4 > end:
            return "truncated in a marker segment"
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        segment_end = position + 2 + length
        if length < 2 or segment_end > end:
            return f"truncated or corrupt marker segment 0xFF{code:02X} at byte {position}"
        if code == 0xDD and length >= 4:
            restart_interval = int.from_bytes(data[position + 4 : position + 6], "big")
        position = segment_end
        if code != 0xDA:
            continue
        scans += 1
        stop = _SCAN_END.search(data, position)
        if stop is None:
            return "truncated in the image data (no end-of-image marker)"
        expected = 0
        for restart in _RESTART.finditer(data, position, stop.start()):
            if not restart_interval or restart.group(1)[0] != 0xD0 + expected:
                return f"corrupt image data: unexpected restart marker at byte {restart.start()}"
            expected = (expected + 1) % 8
        position = stop.start()
        marker = data[position + 1] if position + 1 < end else None
        if marker is not None and marker != 0xFF and marker not in _AFTER_SCAN:
            return f"corrupt image data: invalid marker 0xFF{marker:02X} at byte {position}"

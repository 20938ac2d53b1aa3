"""The one rule for the names of objects and files a step writes or reads: no `..`, `.` or empty segments.

`gs://bucket/a/../b` is not `gs://bucket/b` to an object store: the name is taken literally by some
clients and emulators and normalised by others (issue 21: on the GCS emulator the files landed outside its
storage root, and published.json named another destination than the one written). The same path on a
local disk climbs out of the folder it names. So such names are refused wherever a URI or path is taken
(gs://, s3://, file:// and plain paths); one trailing `/` (a prefix) is allowed, and a `.` segment in a
local path (`./data`).
"""
import urllib.parse

OBJECT_SCHEMES = ("gs", "s3", "minio")


class UriError(ValueError):
    """A URI or path with a `..`, `.` or empty segment, or an object URI without a bucket; names it."""


def check_uri(uri: str, what: str = "") -> str:
    """Returns `uri` unchanged, or raises UriError naming `what` (e.g. "publish_uri") and the segment."""
    label = f"{what}={uri!r}" if what else repr(uri)
    parsed = urllib.parse.urlsplit(uri)
    scheme = parsed.scheme.lower()
    if scheme in OBJECT_SCHEMES:
        if not parsed.netloc:
            raise UriError(f"{label}: no bucket (expected {scheme}://bucket/prefix)")
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path  # gs://b//x: one empty segment
        segments = path.split("/") if path else []
    elif scheme in ("", "file"):
        path = urllib.parse.unquote(parsed.path) if scheme else uri
        segments = path.split("/")[1:] if path.startswith("/") else path.split("/")
    else:
        return uri  # http(s), synthetic: names the server resolves, not paths we write to
    if segments and segments[-1] == "":
        segments = segments[:-1]  # one trailing slash: a prefix
    refused = ("", ".", "..") if scheme in OBJECT_SCHEMES else ("", "..")  # `./data` is a fine local path
    for number, segment in enumerate(segments):
        if segment in refused:
            shown = "an empty segment ('//')" if segment == "" else f"a {segment!r} segment"
            raise UriError(f"{label}: {shown} at position {number + 1}: object stores take such names "
                           "literally while file systems climb out of the folder; name the place directly")
    return uri

"""Where a URI points: the one rule for local path vs remote URI, used by the steps and by the
cluster contract (pipeline/cluster.py), and the containment test that keeps writes in a folder.

A URI is local when it has no scheme (`/data/x`, `runs/x`), the scheme `file` (`file:///data/x`),
or a one-letter scheme (a Windows drive, `C:\\data`); everything else (gs://, http(s)://,
synthetic://) is remote. Standard library only: the cluster contract imports it before any step.

`check_uri` is the one rule for names a step writes or reads: no `..`, `.` or empty segments.
`gs://bucket/a/../b` is not `gs://bucket/b` to an object store: the name is taken literally by some
clients and emulators and normalised by others (issue 21: on the GCS emulator the files landed
outside its storage root, and published.json named another destination than the one written). The
same path on a local disk climbs out of the folder it names. So such names are refused wherever a
URI or path is taken (gs://, s3://, file:// and plain paths); one trailing `/` (a prefix) is
allowed, and a `.` segment in a local path (`./data`).
"""

import os
import re
import urllib.parse
from pathlib import Path


def is_local(uri) -> bool:
    """A path or file:// URI, i.e. something on the disk of whatever machine reads it."""
    scheme = urllib.parse.urlparse(os.fspath(uri)).scheme.lower()
    return scheme in ("", "file") or len(scheme) == 1


def local_path(uri) -> Path | None:
    """The path a local `uri` names (a file:// URI unquoted), or None for a remote one."""
    text = os.fspath(uri)
    if not is_local(text):
        return None
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme.lower() == "file":
        return Path(urllib.parse.unquote(parsed.path))
    return Path(text)


def is_inside(path, folder) -> bool:
    """Whether `path` lies in `folder` once both are made absolute (a guard against `..` and
    absolute names in object names, archive members and links that would write outside an output
    folder)."""
    root = os.path.abspath(folder)
    return os.path.commonpath([os.path.abspath(path), root]) == root


OBJECT_SCHEMES = ("gs", "s3", "minio")
# Schemes whose URIs name a server or bucket before the path (`https://`, `gs://` alone name none).
AUTHORITY_SCHEMES = {
    "gs": "bucket",
    "s3": "bucket",
    "minio": "bucket",
    "http": "host",
    "https": "host",
}


class UriError(ValueError):
    """A URI or path with a `..`, `.` or empty segment, or an object URI without a bucket; names
    it."""


def without_credentials(uri: str) -> str:
    """`uri` as a report or a results file may show it: without user info (`https://user:token@`),
    query or fragment (signed URLs carry their keys there); a path as it is."""
    parsed = urllib.parse.urlsplit(uri)
    if not parsed.scheme or len(parsed.scheme) == 1:  # a path (a Windows drive letter is no scheme)
        return uri
    host = parsed.hostname or ""
    if parsed.port is not None:
        host = f"{host}:{parsed.port}"
    query = parsed.query if parsed.scheme.lower() == "synthetic" else ""  # N's seed and layout
    return urllib.parse.urlunsplit(
        (parsed.scheme, host if parsed.netloc else "", parsed.path, query, "")
    )


def check_authority(uri: str, what: str = "") -> None:
    """The one rule for the bucket of gs://, s3://, minio:// and the host of http(s)://: there is
    one (`https://`, `https:///x`, `gs://` and `s3:///x` name none). Raises UriError naming `what`;
    other schemes pass."""
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    part = AUTHORITY_SCHEMES.get(scheme)
    if part is None:
        return
    try:
        host = urllib.parse.urlsplit(uri).hostname
    except ValueError:  # e.g. an unclosed '[' of an IPv6 address
        host = None
    if not host:
        label = f"{what}={uri!r}" if what else repr(uri)
        raise UriError(f"{label}: no {part}; expected a URI with a {part}, {scheme}://{part}/path")


def check_uri(uri: str, what: str = "") -> str:
    """Returns `uri` unchanged, or raises UriError naming `what` (e.g. "publish_uri") and the
    segment."""
    label = f"{what}={uri!r}" if what else repr(uri)
    parsed = urllib.parse.urlsplit(uri)
    scheme = parsed.scheme.lower()
    check_authority(uri, what)
    if scheme in OBJECT_SCHEMES:
        # gs://b//x holds one empty segment: strip only the one slash after the bucket
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        segments = path.split("/") if path else []
    elif scheme in ("", "file"):
        path = urllib.parse.unquote(parsed.path) if scheme else uri
        segments = path.split("/")[1:] if path.startswith("/") else path.split("/")
    else:
        return uri  # http(s), synthetic: names the server resolves, not paths we write to
    if segments and segments[-1] == "":
        segments = segments[:-1]  # one trailing slash: a prefix
    # `./data` is a fine local path; to an object store `.` is a literal name
    refused = ("", ".", "..") if scheme in OBJECT_SCHEMES else ("", "..")
    for number, segment in enumerate(segments):
        if segment in refused:
            shown = "an empty segment ('//')" if segment == "" else f"a {segment!r} segment"
            raise UriError(
                f"{label}: {shown} at position {number + 1}: object stores take such "
                "names literally while file systems climb out of the folder; name the "
                "place directly"
            )
    return uri


_HOST = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
ENDPOINT_FORMS = "host, host:port (port 1 to 65535), or http(s)://host[:port] with no path"


def parse_endpoint(text: str, what: str = "s3_endpoint") -> tuple[str | None, str]:
    """The one parser of a server endpoint (`s3_endpoint`): `host`, `host:port`, `http://host[:port]`
    or `https://host[:port]` (an IPv6 host in brackets; one trailing `/` allowed) -> (the scheme or
    None, `host[:port]` as given). Raises UriError naming `what` for anything else: no host, a port
    not from 1 to 65535, a path, a query, user info, another scheme."""
    label = f"{what}={text!r}"

    def refuse(why: str):
        raise UriError(f"{label}: {why}; expected {ENDPOINT_FORMS}")

    scheme, separator, rest = text.strip().partition("://")
    if not separator:
        scheme, rest = None, text.strip()
    elif scheme.lower() not in ("http", "https"):
        refuse(f"the scheme {scheme!r} is not http or https")
    else:
        scheme = scheme.lower()
    rest = rest[:-1] if rest.endswith("/") else rest
    for character, what_it_is in (("/", "a path"), ("?", "a query"), ("#", "a fragment")):
        if character in rest:
            refuse(f"{what_it_is} after the host")
    if "@" in rest:
        refuse("user info before the host (credentials go in the secret)")
    parsed = urllib.parse.urlsplit(f"//{rest}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:  # a port that is no number, or beyond 65535
        refuse(f"the port {rest.rpartition(':')[2]!r} is not a number from 1 to 65535")
    if not host:
        refuse("no host")
    if not (rest.startswith("[") or _HOST.fullmatch(host)):
        refuse(f"the host {host!r} is not a host name or address")
    if rest.endswith(":"):
        refuse("no port after ':'")
    if port is not None and not 1 <= port <= 65535:
        refuse(f"the port {port} is not from 1 to 65535")
    return scheme, rest

"""Where a URI points: the one rule for local path vs remote URI, used by the steps and by the
cluster contract (pipeline/cluster.py), and the containment test that keeps writes in a folder.

A URI is local when it has no scheme (`/data/x`, `runs/x`), the scheme `file` (`file:///data/x`),
or a one-letter scheme (a Windows drive, `C:\\data`); everything else (gs://, http(s)://,
synthetic://) is remote. Standard library only: the cluster contract imports it before any step.
"""
import os
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

"""Pipeline steps, one module each, in DAG order:
download -> convert -> fanout -> shard -> train -> freeze -> tflite -> evaluate -> publish.

Each module has a plain function that does the work and a command line (`python -m components.<step>
--help`, following components/cli.py). The KFP components that call these functions live in
pipeline/ops.py: nothing here imports kfp.
"""

import contextlib as _contextlib
import importlib.abc as _importlib_abc
import importlib.util as _importlib_util
import os as _os
import sys as _sys
import tempfile as _tempfile

# TensorFlow's C++ log lines at its import (oneDNN, CPU features; twice, as two libraries load) hide a
# step's --help and its own log. A step module imports TensorFlow at its top, after this package.
# TF_CPP_MIN_LOG_LEVEL=2 quiets what TensorFlow logs later, but not these: they come before absl's logging
# is initialised, and absl then writes everything to stderr. So the one import of tensorflow runs with
# the process's stderr (fd 2) set aside; if the import fails, what it wrote is shown. --verbose keeps
# them all, and so does a TF_CPP_MIN_LOG_LEVEL of 0 set by the caller.


@_contextlib.contextmanager
def _stderr_set_aside():
    try:
        _sys.stderr.flush()
        saved = _os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 to set aside
        yield
        return
    with _tempfile.TemporaryFile() as captured:
        _os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            _os.dup2(saved, 2)
            captured.seek(0)
            _os.write(2, captured.read())
            raise
        finally:
            _os.dup2(saved, 2)
            _os.close(saved)


class _QuietTensorFlowImport(_importlib_abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        _sys.meta_path.remove(self)  # once, and the real finders find it
        spec = _importlib_util.find_spec(name)
        loader = getattr(spec, "loader", None)
        if loader is not None and hasattr(loader, "exec_module"):
            exec_module = loader.exec_module

            def quiet_exec_module(module):
                with _stderr_set_aside():
                    exec_module(module)

            loader.exec_module = quiet_exec_module
        return spec


if "--verbose" not in _sys.argv:
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0" and "tensorflow" not in _sys.modules:
        _sys.meta_path.insert(0, _QuietTensorFlowImport())

"""Pipeline steps, one module each, in DAG order:
download -> convert -> shard -> train -> freeze -> tflite -> evaluate -> publish.

Each module has a command line (`python -m components.<step> --help`), a plain function
that does the work, and a KFP component whose body only calls that function.
"""

import os as _os

if _os.environ.get("_KFP_RUNTIME") == "true":
    # A running KFP task imports kfp.dsl without its compile-time names (kfp/dsl/__init__.py), yet the
    # step modules its body imports declare their `<step>_op` with @dsl.component at import time.
    from kfp import dsl as _dsl

    if not hasattr(_dsl, "component"):
        from kfp.dsl.component_decorator import component as _component

        _dsl.component = _component

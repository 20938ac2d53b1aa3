"""Pipeline steps, one module each, in DAG order:
download -> convert -> shard -> train -> freeze -> tflite -> evaluate -> publish.

Each module has a command line (`python -m components.<step> --help`), a plain function
that does the work, and a KFP component whose body only calls that function.
"""

"""Pipeline steps, one module each, in DAG order:
download -> convert -> fanout -> shard -> train -> freeze -> tflite -> evaluate -> publish.

Each module has a plain function that does the work and a command line (`python -m components.<step>
--help`, following components/cli.py). The KFP components that call these functions live in
pipeline/ops.py: nothing here imports kfp.
"""

"""The Kubeflow pipeline: the DAG (dag.py), its compiled form (compile.py -> pipeline.yaml), local runs with
kfp.local (local.py), and cluster submission (submit.py). Command line: `python -m pipeline --help`."""

"""The Kubeflow pipeline: the DAG (dag.py), its compiled form (compile.py -> pipeline.yaml), local runs with
kfp.local (local.py, with the patches of kfp.local in kfp_local_patches.py), and cluster submission
(submit.py; a cluster run's rules: cluster.py). Command line: `python -m pipeline --help`."""

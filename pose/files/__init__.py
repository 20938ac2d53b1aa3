"""What a step reads and writes, and where: URIs, atomic outputs and the output rule, object
storage, checksums, the step log (map: pose/__init__.py)."""

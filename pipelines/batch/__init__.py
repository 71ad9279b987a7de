"""Folder-level batch jobs: discover -> plan -> run (local processes or Dask) -> manifest -> summary.

Modules, one job each:

* :mod:`pipelines.batch.plan` - scans found by :func:`medgan.discover_scans` become :class:`Task` objects with
  their output paths (mirroring the input tree, always inside the output root);
* :mod:`pipelines.batch.jobs` - the per-scan job functions (plain, picklable, deterministic);
* :mod:`pipelines.batch.executors` - run jobs in-process, in a spawn process pool, or on a Dask cluster;
* :mod:`pipelines.batch.manifest` - the append-only ``manifest.jsonl`` (+ ``manifest.csv``) and resume rules;
* :mod:`pipelines.batch.runner` - the whole flow for ``medgan batch`` and ``medgan run``;
* :mod:`pipelines.batch.spec` - YAML job specs for ``medgan run``;
* :mod:`pipelines.batch.progress`, :mod:`pipelines.batch.logging` - progress bar and run log.
"""

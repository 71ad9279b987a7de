"""What you run: the ``medgan`` command line and folder-level batch jobs."""

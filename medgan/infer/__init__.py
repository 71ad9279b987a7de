"""SuperResolver and Synthesizer: checkpoints to scans with correct geometry."""

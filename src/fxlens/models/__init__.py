"""Models: pure torch modules that map features or audio to predictions. They know nothing of files; checkpoint
I/O lives in `fxlens.models.checkpoint`."""

"""Local Adjoint Correctors as artefacts: the checkpoint format, the bundled LACs and their
training (docs/method.md §2–§4, §16)."""

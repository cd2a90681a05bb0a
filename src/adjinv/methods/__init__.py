"""User-facing methods built on an inverter: class-directional inversion, readout
inversion and the controls that say how much of a reconstruction the features carry
(docs/method.md §6, §12, §14)."""

"""Runners: config in, PNG/JSON/HTML out."""

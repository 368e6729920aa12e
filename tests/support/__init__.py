"""Helpers shared by the tests: running playbooks, real servers on loopback, validation."""

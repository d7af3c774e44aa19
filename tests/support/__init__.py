"""Helpers shared by the tests: real servers, receivers, process checks, scenarios."""

"""Fixtures of the ACME tests' own support modules."""

from tests.acme.certbot5 import certbot5  # noqa: F401

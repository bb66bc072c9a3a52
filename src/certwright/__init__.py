"""certwright: certificate enrollment — an issuing CA/RA, an agent and a monitor."""

__version__ = "0.1.0"

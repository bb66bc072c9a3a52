"""The EST front-end (RFC 7030): routes, wire formats, bootstrap credentials."""

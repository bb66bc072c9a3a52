"""The ACME front-end (RFC 8555, RFC 8737 tls-alpn-01, RFC 8738 IP identifiers,
RFC 9773 renewal information). It owns ACME's protocol state, kept by its storage; the RA
decides and the Authority signs. It reaches both only through the Protocols of
``ports.py``."""

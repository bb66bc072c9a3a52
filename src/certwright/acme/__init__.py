"""The ACME front-end (RFC 8555, RFC 8737 tls-alpn-01, RFC 8738 IP identifiers,
RFC 9773 renewal information). It owns ACME state; the RA decides and the Authority
signs, through certwright.ca.service.CertificateAuthority."""

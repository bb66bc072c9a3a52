"""PKI building blocks: keys, CSRs, names, encodings. No policy and no signing here."""

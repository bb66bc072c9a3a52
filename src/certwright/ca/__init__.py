"""The CA core: profiles and policy (the RA), the Authority that signs, revocation."""

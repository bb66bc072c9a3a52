"""ASGI application assembly and the listeners."""

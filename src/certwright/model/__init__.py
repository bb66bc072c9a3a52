"""Domain objects shared by the storage layer and its callers: frozen dataclasses, no I/O.

Rows are not domain objects (Boulder's ``sa/model.go`` converts between them in one
place, our ``store/``); the objects themselves live here, below the store, the way
Boulder's ``core/objects.go`` holds registrations, orders and authorizations, so that a
front-end can use them without importing the store.
"""

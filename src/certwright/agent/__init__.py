"""The enrollment agent: specs, names from the service's configuration, keys born on the
target, verified atomic installs, renewal, and a local record of every enrollment."""

"""Real servers started by tests and demos on loopback ports, in temporary directories."""

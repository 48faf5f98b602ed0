"""Real servers (PostgreSQL, MariaDB, Redis, DNS) that tests start on loopback ports and stop."""

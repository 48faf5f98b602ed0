"""Real servers (PostgreSQL, MariaDB, Redis, DNS) that tests start on loopback in temporary directories."""

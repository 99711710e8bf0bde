"""A constellation on the mission simulator's virtual clock: orbits (SGP4), ground
stations, the contact plan (passes, inter-satellite links), contact graph routing and
the query simulation (``linkstack constellation``, docs/constellation.md)."""

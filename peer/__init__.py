"""One peer of the task cluster: configuration, membership, election driver, HTTP API."""

"""Real PostgreSQL, slapd and SCIM servers that tests and benchmarks start from the machine's packages."""

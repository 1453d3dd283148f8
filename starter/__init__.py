"""Everything that starts or talks to workflows: the API, the CLI and the run command."""

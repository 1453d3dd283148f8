"""The web UI's pages, one module per page, as the API has one per resource."""

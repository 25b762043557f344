"""HTTP routers: parse, call the repository, shape the answer."""

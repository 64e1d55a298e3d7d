"""cryofac workflows."""

"""cryofac instrument_env."""

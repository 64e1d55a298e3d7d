"""cryofac portal."""

"""The portal's domain logic: plain modules without Flask, testable without a request."""

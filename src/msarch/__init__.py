"""msarch: event-sourced microservices on a real broker."""

__version__ = "0.1.0"

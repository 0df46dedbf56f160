"""nexus-operator: decides which LLM inference backend serves each request."""

__version__ = "0.1.0"

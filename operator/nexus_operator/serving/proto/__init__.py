"""Generated gRPC stubs of nexus.routing.v1 (`make proto`); do not edit."""

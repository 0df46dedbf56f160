"""control/reconcilers."""

"""The kopf operator: registry sync, health probing, status write-back, budgets, leader election.

Only the prober is exported here, so `nexus-operator serve` can probe without importing kopf or
the Kubernetes client; the operator itself is assembled from `handlers` and `lifecycle`.
"""

from .probing import HealthProber

__all__ = ["HealthProber"]

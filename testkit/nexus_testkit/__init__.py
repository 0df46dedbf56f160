"""Test support and developer tools for nexus-operator; never imported by the product.

`localcluster` runs a real etcd + kube-apiserver on loopback, `localcluster.standins` serves
inference stand-ins, and `demo` is what `make run` starts.
"""

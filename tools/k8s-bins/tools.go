//go:build tools

// Package tools pins the Kubernetes control-plane binaries built by tools/build.sh.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)

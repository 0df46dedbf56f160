//go:build tools

// Package tools pins helm for tools/build.sh; nothing here is compiled into the project.
package tools

import _ "helm.sh/helm/v3/cmd/helm"

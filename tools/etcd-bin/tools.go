//go:build tools

// Package tools pins etcd for tools/build.sh; nothing here is compiled into the project.
package tools

import _ "go.etcd.io/etcd/server/v3"

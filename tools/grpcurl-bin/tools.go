//go:build tools

// Package tools pins grpcurl for tools/build.sh; nothing here is compiled into the project.
package tools

import _ "github.com/fullstorydev/grpcurl/cmd/grpcurl"

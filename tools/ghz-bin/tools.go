//go:build tools

// Package tools pins ghz for tools/build.sh; nothing here is compiled into the project.
package tools

import _ "github.com/bojand/ghz/cmd/ghz"

//go:build tools

// Package tools pins vegeta for tools/build.sh; nothing here is compiled into the project.
package tools

import _ "github.com/tsenart/vegeta/v12"

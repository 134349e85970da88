//go:build tools

// Package tools pins the dapr CLI so that dapr/install.sh can `go build github.com/dapr/cli`
// with this module's go.sum and replace directives.
package tools

import _ "github.com/dapr/cli"

// Command sentry runs Dapr's own sentry (the certificate authority for mTLS between sidecars) from the pinned
// github.com/dapr/dapr module.
package main

import "github.com/dapr/dapr/cmd/sentry/app"

func main() {
	app.Run()
}

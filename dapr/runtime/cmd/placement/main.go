// Command placement runs Dapr's own placement from the pinned github.com/dapr/dapr module.
package main

import "github.com/dapr/dapr/cmd/placement/app"

func main() {
	app.Run()
}

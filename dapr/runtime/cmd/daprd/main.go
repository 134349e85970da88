// Command daprd runs Dapr's own daprd from the pinned github.com/dapr/dapr module.
package main

import "github.com/dapr/dapr/cmd/daprd/app"

func main() {
	app.Run()
}

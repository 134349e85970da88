// Command scheduler runs Dapr's own scheduler from the pinned github.com/dapr/dapr module.
package main

import "github.com/dapr/dapr/cmd/scheduler/app"

func main() {
	app.Run()
}

package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Settings are environment variables: Dapr's own (DAPR_HTTP_PORT, DAPR_HTTP_ENDPOINT, DAPR_API_TOKEN) and
// EDGE_AGENT_* for the rest.
type Settings struct {
	Listen          string        // EDGE_AGENT_LISTEN: /healthz and /metrics
	BrokerURL       string        // EDGE_AGENT_BROKER: the device's MQTT broker
	ClientID        string        // EDGE_AGENT_CLIENT_ID: names the persistent session; one agent per id
	Subscribe       string        // EDGE_AGENT_SUBSCRIBE: topic filter of the sensors' readings
	Outbox          string        // EDGE_AGENT_OUTBOX: the SQLite file, on local disk
	OutboxMaxRows   int           // EDGE_AGENT_OUTBOX_MAX_ROWS
	Batch           int           // EDGE_AGENT_BATCH: rows per bulk publish
	PubSub          string        // EDGE_AGENT_PUBSUB: the Dapr pub/sub component
	Topic           string        // EDGE_AGENT_TOPIC: where readings go
	DeadLetterTopic string        // EDGE_AGENT_DEAD_LETTER_TOPIC: where messages that are not readings go
	MaxFuture       time.Duration // EDGE_AGENT_MAX_FUTURE_SECONDS: the sensors service's limit for clocks ahead
	SidecarURL      string        // DAPR_HTTP_ENDPOINT, else http://127.0.0.1:$DAPR_HTTP_PORT
	DaprAPIToken    string        // DAPR_API_TOKEN
}

func LoadSettings(env func(string) string) (Settings, error) {
	get := func(name, fallback string) string {
		if value := env(name); value != "" {
			return value
		}
		return fallback
	}
	var problems []string
	number := func(name string, fallback int) int {
		value, err := strconv.Atoi(get(name, strconv.Itoa(fallback)))
		if err != nil || value < 1 {
			problems = append(problems, fmt.Sprintf("%s=%q is not a positive whole number", name, env(name)))
		}
		return value
	}
	settings := Settings{
		Listen:          get("EDGE_AGENT_LISTEN", "127.0.0.1:8010"),
		BrokerURL:       get("EDGE_AGENT_BROKER", "tcp://127.0.0.1:1883"),
		ClientID:        get("EDGE_AGENT_CLIENT_ID", "edge-agent"),
		Subscribe:       get("EDGE_AGENT_SUBSCRIBE", "tandem/readings/#"),
		Outbox:          get("EDGE_AGENT_OUTBOX", "outbox.sqlite"),
		OutboxMaxRows:   number("EDGE_AGENT_OUTBOX_MAX_ROWS", 100_000),
		Batch:           number("EDGE_AGENT_BATCH", 500),
		PubSub:          get("EDGE_AGENT_PUBSUB", "pubsub"),
		Topic:           get("EDGE_AGENT_TOPIC", "readings"),
		DeadLetterTopic: get("EDGE_AGENT_DEAD_LETTER_TOPIC", "readings-dead"),
		MaxFuture:       time.Duration(number("EDGE_AGENT_MAX_FUTURE_SECONDS", 300)) * time.Second,
		SidecarURL:      get("DAPR_HTTP_ENDPOINT", "http://127.0.0.1:"+get("DAPR_HTTP_PORT", "3500")),
		DaprAPIToken:    env("DAPR_API_TOKEN"),
	}
	if len(problems) > 0 {
		return settings, fmt.Errorf("%v", problems)
	}
	return settings, nil
}

func mustSettings() Settings {
	settings, err := LoadSettings(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge-agent:", err)
		os.Exit(2)
	}
	return settings
}

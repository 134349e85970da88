// Command edge-agent is the device boundary of an edge deployment: an MQTT client of the device's sensors that
// keeps every reading in a SQLite outbox before acknowledging it to the broker, and forwards the outbox through
// its own Dapr sidecar to the readings topic, so a reading outlives a sidecar, broker, network or agent that is
// down. GET /healthz (= /v2/health/ready), /v2/health/live and /metrics (Prometheus) on EDGE_AGENT_LISTEN;
// settings in settings.go.
package main

import (
	"context"
	"encoding/json"
	"log"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	settings := mustSettings()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := NewMetrics(registry)

	outbox, err := OpenOutbox(settings.Outbox, settings.OutboxMaxRows)
	if err != nil {
		log.Fatalf("outbox: %v", err)
	}
	defer outbox.Close()
	metrics.OutboxRows.Set(float64(outbox.Rows()))

	stored := make(chan struct{}, 1)
	intake := NewIntake(outbox, settings, stored, metrics)
	intakeDone := make(chan struct{})
	intakeStopped := make(chan struct{})
	go func() { intake.Run(intakeDone); close(intakeStopped) }()
	forwarder := NewForwarder(outbox, settings, stored, metrics)
	forwarderStopped := make(chan struct{})
	go func() { forwarder.Run(ctx); close(forwarderStopped) }()

	client := mqtt.NewClient(clientOptions(settings, intake, metrics))
	// With ConnectRetry the first connection is retried in the background: the agent serves /healthz (503 until
	// connected) and forwards what its outbox already holds while the broker is away.
	client.Connect()

	server := &http.Server{Addr: settings.Listen, Handler: routes(client, outbox, registry), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.Fatalf("http: %v", err)
		}
	}()
	log.Printf("edge-agent: %s (%s) -> outbox %s (%d rows) -> %s/%s via %s; health and metrics on %s",
		settings.BrokerURL, settings.Subscribe, settings.Outbox, outbox.Rows(), settings.PubSub, settings.Topic,
		settings.SidecarURL, settings.Listen)

	<-ctx.Done()
	log.Printf("edge-agent: stopping")
	// No new messages, then commit (and acknowledge) what was already handed to us, then stop forwarding.
	client.Disconnect(250)
	close(intakeDone)
	<-intakeStopped
	<-forwarderStopped
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	server.Shutdown(shutdown)
}

func clientOptions(settings Settings, intake *Intake, metrics *Metrics) *mqtt.ClientOptions {
	options := mqtt.NewClientOptions().
		AddBroker(settings.BrokerURL).
		SetClientID(settings.ClientID).
		// A persistent session: the broker keeps QoS 1 messages for us while we are away.
		SetCleanSession(false).
		// Acknowledged by the intake after the commit, not by paho when the handler returns.
		SetAutoAckDisabled(true).
		SetOrderMatters(true).
		// Set before connecting: messages the broker sends for the session as soon as we connect (before any
		// SUBSCRIBE of ours) reach a handler instead of sitting unacknowledged (the trap of components-contrib#4110).
		SetDefaultPublishHandler(intake.Handle).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(2 * time.Second).
		SetKeepAlive(10 * time.Second)
	options.SetOnConnectHandler(func(client mqtt.Client) {
		metrics.Connected.Set(1)
		token := client.Subscribe(settings.Subscribe, 1, intake.Handle)
		go func() {
			if token.Wait(); token.Error() != nil {
				log.Printf("subscribing to %s: %v", settings.Subscribe, token.Error())
				client.Disconnect(0) // the retry connects and subscribes again
			}
		}()
		log.Printf("connected to %s", settings.BrokerURL)
	})
	options.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		metrics.Connected.Set(0)
		log.Printf("connection to %s lost: %v", settings.BrokerURL, err)
	})
	return options
}

func routes(client mqtt.Client, outbox *Outbox, registry *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	// The process alone, as every Tandem service's /v2/health/live.
	mux.HandleFunc("GET /v2/health/live", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	// 200 while the broker is connected and the outbox readable; 503 naming what is not. Also under the name every
	// Tandem service's readiness has.
	ready := func(w http.ResponseWriter, _ *http.Request) {
		problem := ""
		if err := outbox.Ping(); err != nil {
			problem = "outbox unreadable: " + err.Error()
		} else if !client.IsConnectionOpen() {
			problem = "not connected to the MQTT broker"
		}
		if problem == "" {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(map[string]string{"error": problem})
	}
	mux.HandleFunc("GET /healthz", ready)
	mux.HandleFunc("GET /v2/health/ready", ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	return mux
}

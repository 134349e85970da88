package main

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the agent's Prometheus series (GET /metrics), beside Go's own.
type Metrics struct {
	Received        *prometheus.CounterVec
	Forwarded       *prometheus.CounterVec
	ForwardFailures prometheus.Counter
	OutboxRows      prometheus.Gauge
	OutboxFull      prometheus.Counter
	PublishSeconds  prometheus.Histogram
	Connected       prometheus.Gauge
}

func NewMetrics(registry prometheus.Registerer) *Metrics {
	m := &Metrics{
		Received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_agent_messages_received_total",
			Help: "MQTT messages taken into the outbox, by kind: reading, or rejected (stored for the dead-letter topic)",
		}, []string{"kind"}),
		Forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_agent_events_forwarded_total",
			Help: "Outbox rows the sidecar accepted (and that were then deleted), by topic",
		}, []string{"topic"}),
		ForwardFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_agent_forward_failures_total",
			Help: "Bulk publishes the sidecar did not accept (its rows stay and are sent again)",
		}),
		OutboxRows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_agent_outbox_rows",
			Help: "Rows waiting in the outbox",
		}),
		OutboxFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_agent_outbox_full_waits_total",
			Help: "Times the intake waited for room: messages stay unacknowledged in the broker meanwhile",
		}),
		PublishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "edge_agent_publish_seconds",
			Help:    "Duration of one bulk publish through the sidecar",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_agent_mqtt_connected",
			Help: "1 while connected to the MQTT broker",
		}),
	}
	registry.MustRegister(m.Received, m.Forwarded, m.ForwardFailures, m.OutboxRows, m.OutboxFull, m.PublishSeconds, m.Connected)
	return m
}

package main

import (
	"encoding/json"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type message struct {
	topic   string
	payload []byte
	acked   atomic.Bool
}

func (m *message) Topic() string   { return m.topic }
func (m *message) Payload() []byte { return m.payload }
func (m *message) Ack()            { m.acked.Store(true) }

func newIntake(t *testing.T, maxRows int) (*Intake, *Outbox, *Metrics) {
	t.Helper()
	outbox := openOutbox(t, filepath.Join(t.TempDir(), "outbox.sqlite"), maxRows)
	metrics := NewMetrics(prometheus.NewRegistry())
	settings := Settings{Topic: "readings", DeadLetterTopic: "readings-dead", MaxFuture: 5 * time.Minute}
	intake := NewIntake(outbox, settings, make(chan struct{}, 1), metrics)
	intake.now = func() time.Time { return now }
	intake.waitForRoom = 10 * time.Millisecond
	return intake, outbox, metrics
}

func waitFor(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s after 5 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAMessageIsAcknowledgedOnlyOnceCommitted(t *testing.T) {
	intake, outbox, metrics := newIntake(t, 1) // room for one row
	done := make(chan struct{})
	defer close(done)
	go intake.Run(done)

	first := &message{topic: "tandem/readings/machine-1", payload: payload(t, nil)}
	second := &message{topic: "tandem/readings/machine-1", payload: payload(t, func(r map[string]any) { r["id"] = "machine-1:8" })}
	intake.messages <- first
	intake.messages <- second
	waitFor(t, "first acknowledged", first.acked.Load)
	waitFor(t, "a wait for room counted", func() bool { return testutil.ToFloat64(metrics.OutboxFull) > 0 })
	if second.acked.Load() {
		t.Fatal("acknowledged a message the full outbox did not take")
	}
	rows, _ := outbox.Oldest(10)
	var stored Reading
	json.Unmarshal(rows[0].Event, &stored)
	if len(rows) != 1 || rows[0].Topic != "readings" || stored.ID != "machine-1:7" || stored.ReceivedAt == 0 {
		t.Fatalf("stored %v (%+v)", rows, stored)
	}

	outbox.Delete(rows) // the forwarder made room
	waitFor(t, "second acknowledged", second.acked.Load)
	if outbox.Rows() != 1 {
		t.Fatalf("%d rows", outbox.Rows())
	}
}

func TestAMessageThatIsNotAReadingGoesToTheDeadLetterTopic(t *testing.T) {
	intake, outbox, metrics := newIntake(t, 10)
	done := make(chan struct{})
	defer close(done)
	go intake.Run(done)

	bad := &message{topic: "tandem/readings/x", payload: []byte(`{"machine": "x"}`)}
	intake.messages <- bad
	waitFor(t, "acknowledged", bad.acked.Load)
	rows, _ := outbox.Oldest(10)
	var letter map[string]string
	json.Unmarshal(rows[0].Event, &letter)
	if rows[0].Topic != "readings-dead" || letter["payload"] != `{"machine": "x"}` || letter["error"] == "" {
		t.Fatalf("stored %s on %s", rows[0].Event, rows[0].Topic)
	}
	if testutil.ToFloat64(metrics.Received.WithLabelValues("rejected")) != 1 {
		t.Fatal("rejected message not counted")
	}
}

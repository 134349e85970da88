package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Message is what the intake needs of an MQTT message (paho's mqtt.Message has it; tests use their own).
type Message interface {
	Topic() string
	Payload() []byte
	Ack()
}

// Intake turns MQTT messages into outbox entries: valid readings for the readings topic, anything else for the
// dead-letter topic (the alerts service keeps those, GET /dead-letters), so no message the broker was told we
// have is dropped silently. A message is acknowledged only after its entry is committed.
type Intake struct {
	outbox      *Outbox
	topic       string
	deadTopic   string
	maxFuture   time.Duration
	messages    chan Message
	stored      chan<- struct{} // told after each commit, so the forwarder need not poll
	metrics     *Metrics
	now         func() time.Time
	waitForRoom time.Duration
}

func NewIntake(outbox *Outbox, settings Settings, stored chan<- struct{}, metrics *Metrics) *Intake {
	return &Intake{
		outbox:      outbox,
		topic:       settings.Topic,
		deadTopic:   settings.DeadLetterTopic,
		maxFuture:   settings.MaxFuture,
		messages:    make(chan Message, 1024),
		stored:      stored,
		metrics:     metrics,
		now:         time.Now,
		waitForRoom: 100 * time.Millisecond,
	}
}

// Handle is the MQTT message handler. It only queues the message: Run commits and acknowledges it. When the outbox
// is full the queue fills and Handle blocks, so the broker keeps what it has not been told we took.
func (in *Intake) Handle(_ mqtt.Client, message mqtt.Message) { in.messages <- message }

// Run commits queued messages in batches (one transaction for all that are waiting) and acknowledges each after
// its commit, until done is closed.
func (in *Intake) Run(done <-chan struct{}) {
	var pending []Message
	for {
		if len(pending) == 0 {
			select {
			case message := <-in.messages:
				pending = append(pending, message)
			case <-done:
				return
			}
		}
	drain: // take every message already waiting into this transaction
		for len(pending) < cap(in.messages) {
			select {
			case message := <-in.messages:
				pending = append(pending, message)
			default:
				break drain
			}
		}
		taken, err := in.outbox.Add(in.entries(pending))
		if err != nil {
			log.Printf("outbox: %v; trying again", err)
		}
		for _, message := range pending[:taken] {
			message.Ack()
		}
		pending = pending[taken:]
		in.metrics.OutboxRows.Set(float64(in.outbox.Rows()))
		if taken > 0 {
			select {
			case in.stored <- struct{}{}:
			default:
			}
		}
		if len(pending) > 0 {
			// Full (or failing): wait for the forwarder to make room; meanwhile the broker keeps the rest.
			in.metrics.OutboxFull.Inc()
			select {
			case <-time.After(in.waitForRoom):
			case <-done:
				return
			}
		}
	}
}

func (in *Intake) entries(messages []Message) []Entry {
	entries := make([]Entry, len(messages))
	now := in.now()
	for i, message := range messages {
		entries[i] = in.entry(message, now)
	}
	return entries
}

func (in *Intake) entry(message Message, now time.Time) Entry {
	reading, err := ParseReading(message.Payload(), now, in.maxFuture)
	if err == nil {
		reading.ReceivedAt = float64(now.UnixNano()) / 1e9
		event, _ := json.Marshal(reading)
		in.metrics.Received.WithLabelValues("reading").Inc()
		return Entry{Topic: in.topic, Key: reading.Key(), Event: event}
	}
	in.metrics.Received.WithLabelValues("rejected").Inc()
	log.Printf("rejected a message on %s: %v", message.Topic(), err)
	digest := sha256.Sum256(append([]byte(message.Topic()+"\x00"), message.Payload()...))
	event, _ := json.Marshal(map[string]string{
		"mqtt_topic": message.Topic(),
		"payload":    string(message.Payload()),
		"error":      err.Error(),
	})
	return Entry{Topic: in.deadTopic, Key: hex.EncodeToString(digest[:]), Event: event}
}

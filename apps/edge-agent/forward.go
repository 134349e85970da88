package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"time"
)

// Forwarder publishes the outbox through the agent's own sidecar, oldest rows first, with Dapr's bulk publish API
// (one call per topic and batch; daprd publishes one by one for brokers without bulk support), and deletes rows
// only once the sidecar answered 2xx. Anything else is tried again with backoff: subscribers are idempotent by
// reading id, so a batch published twice (the agent killed between publish and delete) is harmless.
type Forwarder struct {
	outbox   *Outbox
	client   *http.Client
	sidecar  string // http://host:port of the agent's daprd
	token    string
	pubsub   string
	batch    int
	stored   <-chan struct{}
	metrics  *Metrics
	maxDelay time.Duration
}

func NewForwarder(outbox *Outbox, settings Settings, stored <-chan struct{}, metrics *Metrics) *Forwarder {
	return &Forwarder{
		outbox:   outbox,
		client:   &http.Client{Timeout: 30 * time.Second},
		sidecar:  settings.SidecarURL,
		token:    settings.DaprAPIToken,
		pubsub:   settings.PubSub,
		batch:    settings.Batch,
		stored:   stored,
		metrics:  metrics,
		maxDelay: 2 * time.Second,
	}
}

// Run forwards until the context ends.
func (f *Forwarder) Run(ctx context.Context) {
	delay := 50 * time.Millisecond
	for ctx.Err() == nil {
		forwarded, err := f.ForwardOnce(ctx)
		switch {
		case err != nil:
			f.metrics.ForwardFailures.Inc()
			log.Printf("forwarding: %v; trying again in %s", err, delay)
			sleep(ctx, delay)
			delay = min(2*delay, f.maxDelay)
		case forwarded == 0:
			delay = 50 * time.Millisecond
			select { // nothing to send: wait for the intake, with a tick in case a signal was missed
			case <-f.stored:
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
		default:
			delay = 50 * time.Millisecond
		}
	}
}

// ForwardOnce publishes up to one batch of the oldest rows and returns how many were published and deleted.
func (f *Forwarder) ForwardOnce(ctx context.Context) (int, error) {
	rows, err := f.outbox.Oldest(f.batch)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	byTopic := map[string][]Row{}
	var topics []string
	for _, row := range rows {
		if _, seen := byTopic[row.Topic]; !seen {
			topics = append(topics, row.Topic)
		}
		byTopic[row.Topic] = append(byTopic[row.Topic], row)
	}
	forwarded := 0
	for _, topic := range topics {
		if err := f.publish(ctx, topic, byTopic[topic]); err != nil {
			return forwarded, err
		}
		if err := f.outbox.Delete(byTopic[topic]); err != nil {
			return forwarded, err
		}
		forwarded += len(byTopic[topic])
		f.metrics.Forwarded.WithLabelValues(topic).Add(float64(len(byTopic[topic])))
	}
	f.metrics.OutboxRows.Set(float64(f.outbox.Rows()))
	return forwarded, nil
}

type bulkEntry struct {
	EntryID     string          `json:"entryId"`
	Event       json.RawMessage `json:"event"`
	ContentType string          `json:"contentType"`
}

func (f *Forwarder) publish(ctx context.Context, topic string, rows []Row) error {
	entries := make([]bulkEntry, len(rows))
	for i, row := range rows {
		entries[i] = bulkEntry{EntryID: strconv.FormatInt(row.Seq, 10), Event: row.Event, ContentType: "application/json"}
	}
	body, _ := json.Marshal(entries)
	url := fmt.Sprintf("%s/v1.0-alpha1/publish/bulk/%s/%s", f.sidecar, f.pubsub, topic)
	request, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	request.Header.Set("Content-Type", "application/json")
	if f.token != "" {
		request.Header.Set("dapr-api-token", f.token)
	}
	started := time.Now()
	response, err := f.client.Do(request)
	if err != nil {
		return fmt.Errorf("bulk publish of %d events to %s/%s: %w", len(rows), f.pubsub, topic, err)
	}
	defer response.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(response.Body, 2000))
	f.metrics.PublishSeconds.Observe(time.Since(started).Seconds())
	if response.StatusCode/100 != 2 {
		return fmt.Errorf("bulk publish of %d events to %s/%s: %d %s", len(rows), f.pubsub, topic, response.StatusCode, answer)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

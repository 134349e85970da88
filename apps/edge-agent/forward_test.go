package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// A stand-in for the sidecar's bulk publish API that records what it accepted and answers `status`.
type fakeSidecar struct {
	mu       sync.Mutex
	status   int
	accepted map[string][]bulkEntry // by path
	tokens   []string
}

func (s *fakeSidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	s.tokens = append(s.tokens, r.Header.Get("dapr-api-token"))
	if s.status/100 == 2 {
		var entries []bulkEntry
		json.Unmarshal(body, &entries)
		s.accepted[r.URL.Path] = append(s.accepted[r.URL.Path], entries...)
	}
	w.WriteHeader(s.status)
}

func newForwarder(t *testing.T, status int) (*Forwarder, *Outbox, *fakeSidecar) {
	t.Helper()
	sidecar := &fakeSidecar{status: status, accepted: map[string][]bulkEntry{}}
	server := httptest.NewServer(sidecar)
	t.Cleanup(server.Close)
	outbox := openOutbox(t, filepath.Join(t.TempDir(), "outbox.sqlite"), 100)
	settings := Settings{SidecarURL: server.URL, DaprAPIToken: "secret", PubSub: "pubsub", Batch: 4}
	return NewForwarder(outbox, settings, nil, NewMetrics(prometheus.NewRegistry())), outbox, sidecar
}

func TestRowsAreDeletedOnlyAfterTheSidecarAccepted(t *testing.T) {
	forwarder, outbox, sidecar := newForwarder(t, http.StatusServiceUnavailable)
	outbox.Add(entries(3, 0))
	if _, err := forwarder.ForwardOnce(context.Background()); err == nil {
		t.Fatal("no error for a 503")
	}
	if outbox.Rows() != 3 {
		t.Fatalf("%d rows left after a 503, want 3", outbox.Rows())
	}

	sidecar.status = http.StatusNoContent
	forwarded, err := forwarder.ForwardOnce(context.Background())
	if err != nil || forwarded != 3 || outbox.Rows() != 0 {
		t.Fatalf("forwarded %d (%v), %d rows left", forwarded, err, outbox.Rows())
	}
	published := sidecar.accepted["/v1.0-alpha1/publish/bulk/pubsub/readings"]
	if len(published) != 3 || string(published[2].Event) != `{"n":2}` || published[0].ContentType != "application/json" {
		t.Fatalf("published %+v", published)
	}
	if sidecar.tokens[0] != "secret" {
		t.Fatalf("token %q", sidecar.tokens[0])
	}
}

func TestEachTopicIsOneBulkPublishOfAtMostOneBatch(t *testing.T) {
	forwarder, outbox, sidecar := newForwarder(t, http.StatusOK)
	outbox.Add(entries(2, 0))
	outbox.Add([]Entry{{Topic: "readings-dead", Key: "x", Event: []byte(`{"error": "bad"}`)}})
	outbox.Add(entries(3, 2))
	forwarded, err := forwarder.ForwardOnce(context.Background())
	if err != nil || forwarded != 4 {
		t.Fatalf("forwarded %d, %v", forwarded, err)
	}
	if len(sidecar.accepted["/v1.0-alpha1/publish/bulk/pubsub/readings"]) != 3 ||
		len(sidecar.accepted["/v1.0-alpha1/publish/bulk/pubsub/readings-dead"]) != 1 {
		t.Fatalf("published %v", sidecar.accepted)
	}
	if outbox.Rows() != 2 {
		t.Fatalf("%d rows left, want 2", outbox.Rows())
	}
}

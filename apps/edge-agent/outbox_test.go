package main

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func entries(n int, first int) []Entry {
	out := make([]Entry, n)
	for i := range out {
		out[i] = Entry{Topic: "readings", Key: fmt.Sprint(first + i), Event: []byte(fmt.Sprintf(`{"n": %d}`, first+i))}
	}
	return out
}

func openOutbox(t *testing.T, path string, maxRows int) *Outbox {
	t.Helper()
	outbox, err := OpenOutbox(path, maxRows)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { outbox.Close() })
	return outbox
}

func TestRowsComeOutOldestFirstAndSurviveReopening(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.sqlite")
	outbox := openOutbox(t, path, 100)
	if taken, err := outbox.Add(entries(5, 0)); taken != 5 || err != nil {
		t.Fatalf("took %d, %v", taken, err)
	}
	outbox.Close()

	again := openOutbox(t, path, 100)
	if again.Rows() != 5 {
		t.Fatalf("%d rows after reopening", again.Rows())
	}
	rows, err := again.Oldest(3)
	if err != nil || len(rows) != 3 || string(rows[0].Event) != `{"n": 0}` || rows[2].Key != "2" {
		t.Fatalf("oldest: %v %v", rows, err)
	}
	if err := again.Delete(rows); err != nil {
		t.Fatal(err)
	}
	rest, _ := again.Oldest(10)
	if again.Rows() != 2 || len(rest) != 2 || rest[0].Key != "3" {
		t.Fatalf("after delete: %d rows, %v", again.Rows(), rest)
	}
}

func TestADuplicateKeyIsTakenButStoredOnce(t *testing.T) {
	outbox := openOutbox(t, filepath.Join(t.TempDir(), "outbox.sqlite"), 100)
	outbox.Add(entries(3, 0))
	if taken, _ := outbox.Add(entries(3, 1)); taken != 3 {
		t.Fatalf("took %d of 3", taken)
	}
	if outbox.Rows() != 4 {
		t.Fatalf("%d rows, want 4 (keys 0-3)", outbox.Rows())
	}
}

func TestAFullOutboxTakesOnlyWhatFits(t *testing.T) {
	outbox := openOutbox(t, filepath.Join(t.TempDir(), "outbox.sqlite"), 4)
	if taken, _ := outbox.Add(entries(3, 0)); taken != 3 {
		t.Fatalf("took %d", taken)
	}
	if taken, _ := outbox.Add(entries(3, 3)); taken != 1 {
		t.Fatalf("took %d with room for 1", taken)
	}
	if taken, _ := outbox.Add(entries(1, 6)); taken != 0 {
		t.Fatalf("took %d when full", taken)
	}
	rows, _ := outbox.Oldest(1)
	outbox.Delete(rows)
	if taken, _ := outbox.Add(entries(1, 6)); taken != 1 {
		t.Fatalf("took %d after a delete made room", taken)
	}
}

func TestPingLeavesTheConnectionFree(t *testing.T) {
	outbox := openOutbox(t, filepath.Join(t.TempDir(), "outbox.sqlite"), 10)
	for range 3 {
		if err := outbox.Ping(); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error)
	go func() { _, err := outbox.Add(entries(1, 0)); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Add waited for a connection a Ping kept")
	}
}

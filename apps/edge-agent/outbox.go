package main

import (
	"database/sql"
	"fmt"
	"sync"
	"time"

	_ "modernc.org/sqlite" // pure Go: the agent builds with CGO_ENABLED=0 and cross-compiles
)

// Outbox is the agent's SQLite table of events not yet published: a message is acknowledged to the broker only
// once it is committed here, and a row is deleted only once the sidecar accepted it. It holds at most MaxRows rows.
type Outbox struct {
	db      *sql.DB
	maxRows int
	mu      sync.Mutex // one writer at a time; rows counts what is committed
	rows    int
}

// Entry is one event to publish: its topic, a key that makes a second copy a no-op while the first is stored,
// and the event itself (JSON).
type Entry struct {
	Topic string
	Key   string
	Event []byte
}

// Row is an entry as stored, with its place in the outbox.
type Row struct {
	Seq int64
	Entry
}

// OpenOutbox opens (or creates) the outbox file. Every commit is on disk before it returns (WAL, synchronous=FULL):
// a kill -9 right after an acknowledgement loses nothing.
func OpenOutbox(path string, maxRows int) (*Outbox, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1) // SQLite has one writer; one connection keeps the pragmas and avoids SQLITE_BUSY
	_, err = db.Exec(`CREATE TABLE IF NOT EXISTS outbox (
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		topic TEXT NOT NULL,
		key TEXT NOT NULL,
		event BLOB NOT NULL,
		added_at REAL NOT NULL,
		UNIQUE (topic, key))`)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("outbox %s: %w", path, err)
	}
	outbox := &Outbox{db: db, maxRows: maxRows}
	if err := db.QueryRow(`SELECT COUNT(*) FROM outbox`).Scan(&outbox.rows); err != nil {
		db.Close()
		return nil, err
	}
	return outbox, nil
}

// Add commits as many of the entries, in order, as there is room for, in one transaction, and returns how many
// it took: those are stored (or were already: a duplicate key counts as taken). The rest wait for room.
func (o *Outbox) Add(entries []Entry) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	room := o.maxRows - o.rows
	if room <= 0 {
		return 0, nil
	}
	take := min(room, len(entries))
	tx, err := o.db.Begin()
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	statement, err := tx.Prepare(`INSERT OR IGNORE INTO outbox (topic, key, event, added_at) VALUES (?, ?, ?, ?)`)
	if err != nil {
		return 0, err
	}
	defer statement.Close()
	now := float64(time.Now().UnixNano()) / 1e9
	inserted := 0
	for _, entry := range entries[:take] {
		result, err := statement.Exec(entry.Topic, entry.Key, entry.Event, now)
		if err != nil {
			return 0, err
		}
		count, _ := result.RowsAffected()
		inserted += int(count)
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	o.rows += inserted
	return take, nil
}

// Oldest returns up to limit rows, oldest first.
func (o *Outbox) Oldest(limit int) ([]Row, error) {
	rows, err := o.db.Query(`SELECT seq, topic, key, event FROM outbox ORDER BY seq LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var found []Row
	for rows.Next() {
		var row Row
		if err := rows.Scan(&row.Seq, &row.Topic, &row.Key, &row.Event); err != nil {
			return nil, err
		}
		found = append(found, row)
	}
	return found, rows.Err()
}

// Delete removes rows the sidecar has accepted.
func (o *Outbox) Delete(rows []Row) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	tx, err := o.db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	deleted := 0
	for _, row := range rows {
		result, err := tx.Exec(`DELETE FROM outbox WHERE seq = ?`, row.Seq)
		if err != nil {
			return err
		}
		count, _ := result.RowsAffected()
		deleted += int(count)
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	o.rows -= deleted
	return nil
}

// Rows is how many rows wait to be published.
func (o *Outbox) Rows() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.rows
}

// Ping says whether the table can still be read. (Scan, not Row.Err: only Scan gives the one connection back.)
func (o *Outbox) Ping() error {
	var rows int
	return o.db.QueryRow(`SELECT COUNT(*) FROM (SELECT 1 FROM outbox LIMIT 1)`).Scan(&rows)
}

func (o *Outbox) Close() error { return o.db.Close() }

package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func payload(t *testing.T, change func(map[string]any)) []byte {
	t.Helper()
	values := map[string]any{}
	for i, channel := range Channels {
		values[channel] = float64(i) + 0.5
	}
	reading := map[string]any{"machine": "machine-1", "id": "machine-1:7", "timestamp": "2026-12-01T11:59:00+01:00", "values": values}
	if change != nil {
		change(reading)
	}
	encoded, err := json.Marshal(reading)
	if err != nil {
		t.Fatal(err)
	}
	return encoded
}

func TestAValidReadingComesOutInUTCWithEveryChannel(t *testing.T) {
	reading, err := ParseReading(payload(t, nil), now, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if reading.Machine != "machine-1" || reading.ID != "machine-1:7" || reading.Key() != "machine-1/machine-1:7" {
		t.Errorf("got %+v", reading)
	}
	if reading.Timestamp != "2026-12-01T10:59:00.000000Z" {
		t.Errorf("timestamp %s", reading.Timestamp)
	}
	if len(reading.Values) != len(Channels) || reading.Values["bypass_ratio"] != 14.5 {
		t.Errorf("values %v", reading.Values)
	}
}

func TestEpochSecondsAreAccepted(t *testing.T) {
	reading, err := ParseReading(payload(t, func(r map[string]any) { r["timestamp"] = 1764590400.25 }), now, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if reading.Timestamp != "2025-12-01T12:00:00.250000Z" {
		t.Errorf("timestamp %s", reading.Timestamp)
	}
}

// Each bad input the sensors service refuses is refused here too, with the problem named.
func TestBadReadingsAreRefusedWithTheProblemNamed(t *testing.T) {
	cases := map[string]struct {
		change func(map[string]any)
		raw    string
		want   string
	}{
		"not JSON":          {raw: "hello", want: "not a reading"},
		"unknown field":     {change: func(r map[string]any) { r["colour"] = "red" }, want: "unknown field"},
		"machine missing":   {change: func(r map[string]any) { delete(r, "machine") }, want: "machine"},
		"id with a slash":   {change: func(r map[string]any) { r["id"] = "a/b" }, want: `id "a/b"`},
		"id too long":       {change: func(r map[string]any) { r["id"] = strings.Repeat("x", 129) }, want: "id"},
		"no zone":           {change: func(r map[string]any) { r["timestamp"] = "2026-12-01T11:00:00" }, want: "RFC 3339"},
		"no timestamp":      {change: func(r map[string]any) { delete(r, "timestamp") }, want: "timestamp is missing"},
		"far future":        {change: func(r map[string]any) { r["timestamp"] = "2026-12-01T12:06:00Z" }, want: "in the future"},
		"channel missing":   {change: func(r map[string]any) { delete(r["values"].(map[string]any), "mach") }, want: "missing channels [mach]"},
		"channel unknown":   {change: func(r map[string]any) { r["values"].(map[string]any)["colour"] = 1 }, want: "unknown channels [colour]"},
		"value not numeric": {change: func(r map[string]any) { r["values"].(map[string]any)["mach"] = "NaN" }, want: "channels [mach] are not finite"},
		"value null":        {change: func(r map[string]any) { r["values"].(map[string]any)["mach"] = nil }, want: "not finite"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			body := []byte(c.raw)
			if c.raw == "" {
				body = payload(t, c.change)
			}
			_, err := ParseReading(body, now, 5*time.Minute)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one saying %q", err, c.want)
			}
		})
	}
}

func ExampleParseReading() {
	_, err := ParseReading([]byte(`{"machine": "m", "id": "1", "timestamp": 0, "values": {}}`), now, time.Minute)
	fmt.Println(err)
	// Output: missing channels [altitude, mach, throttle, fan_inlet_temp, fan_inlet_pressure, lpc_outlet_temp, hpc_outlet_temp, lpt_outlet_temp, hpc_outlet_pressure, static_pressure, hpt_coolant_bleed, fan_speed, core_speed, fuel_flow_ratio, bypass_ratio], unknown channels []
}

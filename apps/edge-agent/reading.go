package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// Channels are the values every reading carries, exactly those of the Python kit's tandem.fleet.CHANNELS (the
// sensors service accepts nothing else; tests/unit/test_edge_agent_schema.py keeps the two lists equal).
var Channels = []string{
	"altitude", "mach", "throttle",
	"fan_inlet_temp", "fan_inlet_pressure", "lpc_outlet_temp", "hpc_outlet_temp", "lpt_outlet_temp",
	"hpc_outlet_pressure", "static_pressure", "hpt_coolant_bleed", "fan_speed", "core_speed",
	"fuel_flow_ratio", "bypass_ratio",
}

// Machine and reading ids become state keys downstream: the sensors service's rule.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)

// Reading is one sensor reading as the features service takes it from the readings topic: what the sensors
// service publishes for a reading it accepted.
type Reading struct {
	Machine    string             `json:"machine"`
	ID         string             `json:"id"`
	Timestamp  string             `json:"timestamp"`
	Values     map[string]float64 `json:"values"`
	ReceivedAt float64            `json:"received_at"`
}

// Key identifies a reading: the same reading sent twice is stored once.
func (r Reading) Key() string { return r.Machine + "/" + r.ID }

type incoming struct {
	Machine   string                     `json:"machine"`
	ID        string                     `json:"id"`
	Timestamp json.RawMessage            `json:"timestamp"`
	Values    map[string]json.RawMessage `json:"values"`
}

// ParseReading validates an MQTT payload as the sensors service validates a reading: the fields machine, id,
// timestamp (RFC 3339 with a zone, or seconds since the epoch; at most maxFuture ahead of now) and values (every
// channel, finite numbers, nothing else), and no other field. The timestamp comes out as RFC 3339 in UTC.
func ParseReading(payload []byte, now time.Time, maxFuture time.Duration) (Reading, error) {
	var in incoming
	decoder := json.NewDecoder(bytes.NewReader(payload))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&in); err != nil {
		return Reading{}, fmt.Errorf("not a reading: %v", err)
	}
	if !namePattern.MatchString(in.Machine) {
		return Reading{}, fmt.Errorf("machine %q is not 1-128 letters, digits or _.:-", in.Machine)
	}
	if !namePattern.MatchString(in.ID) {
		return Reading{}, fmt.Errorf("id %q is not 1-128 letters, digits or _.:-", in.ID)
	}
	timestamp, err := parseTimestamp(in.Timestamp)
	if err != nil {
		return Reading{}, err
	}
	if timestamp.After(now.Add(maxFuture)) {
		return Reading{}, fmt.Errorf("timestamp %s is more than %s in the future", timestamp.Format(time.RFC3339), maxFuture)
	}
	values, err := parseValues(in.Values)
	if err != nil {
		return Reading{}, err
	}
	return Reading{
		Machine:   in.Machine,
		ID:        in.ID,
		Timestamp: timestamp.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		Values:    values,
	}, nil
}

func parseTimestamp(raw json.RawMessage) (time.Time, error) {
	var seconds float64
	if err := json.Unmarshal(raw, &seconds); err == nil {
		if math.IsNaN(seconds) || math.IsInf(seconds, 0) {
			return time.Time{}, fmt.Errorf("timestamp %s is not a time", raw)
		}
		whole, fraction := math.Modf(seconds)
		return time.Unix(int64(whole), int64(fraction*1e9)), nil
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		return time.Time{}, fmt.Errorf("timestamp is missing, or neither a string nor a number")
	}
	parsed, err := time.Parse(time.RFC3339Nano, text)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %q is not RFC 3339 with a time zone", text)
	}
	return parsed, nil
}

func parseValues(raw map[string]json.RawMessage) (map[string]float64, error) {
	var missing, unknown, notNumbers []string
	values := make(map[string]float64, len(Channels))
	for _, channel := range Channels {
		value, ok := raw[channel]
		if !ok {
			missing = append(missing, channel)
			continue
		}
		var number *float64 // null leaves it nil
		if err := json.Unmarshal(value, &number); err != nil || number == nil {
			notNumbers = append(notNumbers, channel)
			continue
		}
		values[channel] = *number
	}
	for channel := range raw {
		if !slices.Contains(Channels, channel) {
			unknown = append(unknown, channel)
		}
	}
	sort.Strings(unknown)
	if len(missing) > 0 || len(unknown) > 0 {
		return nil, fmt.Errorf("missing channels [%s], unknown channels [%s]", strings.Join(missing, ", "), strings.Join(unknown, ", "))
	}
	if len(notNumbers) > 0 {
		// JSON has no NaN or infinity: a value that is not a number is the only way to be not finite here.
		return nil, fmt.Errorf("channels [%s] are not finite numbers", strings.Join(notNumbers, ", "))
	}
	return values, nil
}

package main

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
)

func TestHealthSaysWhatIsMissingAndLivenessIsTheProcessAlone(t *testing.T) {
	outbox := openOutbox(t, filepath.Join(t.TempDir(), "outbox.sqlite"), 10)
	registry := prometheus.NewRegistry()
	NewMetrics(registry)
	unconnected := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://127.0.0.1:1"))
	server := httptest.NewServer(routes(unconnected, outbox, registry))
	defer server.Close()

	for path, want := range map[string]int{"/v2/health/live": 200, "/healthz": 503, "/v2/health/ready": 503, "/metrics": 200} {
		response, err := http.Get(server.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		response.Body.Close()
		if response.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, response.StatusCode, want)
		}
	}
	response, _ := http.Get(server.URL + "/healthz")
	defer response.Body.Close()
	body := new(strings.Builder)
	buffer := make([]byte, 200)
	n, _ := response.Body.Read(buffer)
	body.Write(buffer[:n])
	if !strings.Contains(body.String(), `"error":"not connected to the MQTT broker"`) {
		t.Errorf("body %s", body)
	}
}

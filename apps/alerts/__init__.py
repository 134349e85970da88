"""The alerts service: one alert per machine per degradation episode, stored, listed and streamed."""

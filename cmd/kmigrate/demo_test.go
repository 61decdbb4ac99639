package main

import (
	"testing"
)

// TestDemo runs the README's main command, shortened: embedded clusters,
// six flips mid-stream (the group, then the topic), and a verdict that fails the test on any lost,
// redelivered or reordered record.
func TestDemo(t *testing.T) {
	if err := runDemo([]string{"-duration", "8s", "-rate", "1000"}); err != nil {
		t.Fatal(err)
	}
}

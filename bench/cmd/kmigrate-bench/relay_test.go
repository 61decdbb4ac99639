package main

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestRelayCopiesBothWays: bytes sent through the relay reach the far side
// unchanged, the answer comes back, and close ends relayed connections.
func TestRelayCopiesBothWays(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	r, err := startRelay("127.0.0.1:0", echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", r.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	want := bytes.Repeat([]byte("kmigrate"), 1<<17) // 1 MiB
	go c.Write(want)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read back through the relay: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes changed on the way through the relay")
	}
	if err := r.close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a relayed connection survived close")
	}
}

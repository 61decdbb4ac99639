// Command kafka-local runs one real single-node Apache Kafka broker on
// 127.0.0.1 (the test harness's), prints its bootstrap address and keeps it
// running until interrupted. `make run` puts `kmigrate proxy` in front of it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

func main() {
	name := flag.String("name", "source", "cluster name (logs, data directory)")
	addrFile := flag.String("addr-file", "", "write the bootstrap address to this file once the broker is up")
	relayed := flag.String("relayed-addr", "", "also listen on a plaintext listener advertised as this address (a relay forwarding to the address printed for it)")
	brokers := flag.Int("brokers", 1, "brokers in the cluster (the first is also the controller)")
	heapMB := flag.Int("heap-mb", 0, "broker JVM heap in MiB (0: the harness default)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := kafkatest.Start(ctx, kafkatest.Options{Name: *name, HeapMB: *heapMB, RelayedAddr: *relayed, Brokers: *brokers})
	if err != nil {
		fmt.Fprintln(os.Stderr, "kafka-local:", err)
		os.Exit(1)
	}
	defer kafkatest.StopAll()
	fmt.Printf("Kafka %s (%s) is up at %s (started in %s); Ctrl-C stops it\n", kafkatest.KafkaVersion, *name, c.Bootstrap(), c.StartupTime().Round(100_000_000))
	if *relayed != "" {
		fmt.Printf("relayed listener: %s, advertised as %s\n", c.Addr(kafkatest.Relayed), *relayed)
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(c.Bootstrap()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "kafka-local:", err)
			os.Exit(1)
		}
	}
	<-ctx.Done()
}

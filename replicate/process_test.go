package replicate

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

var buildOnce struct {
	sync.Once
	path string
	err  error
}

// kmigrateBinary builds cmd/kmigrate once per test binary.
func kmigrateBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := kafkatest.RepoRoot()
		if err != nil {
			buildOnce.err = err
			return
		}
		dir, err := os.MkdirTemp("", "kmigrate-bin")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "kmigrate")
		cmd := exec.Command("go", "build", "-o", buildOnce.path, "./cmd/kmigrate")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proxyProcess runs `kmigrate proxy` as a child process.
type proxyProcess struct {
	cmd    *exec.Cmd
	listen string
	log    string
}

func startProxyProcess(t *testing.T, listen string, args ...string) *proxyProcess {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "proxy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kmigrateBinary(t), append([]string{"proxy", "--listen", listen, "--admin-listen", ""}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proxyProcess{cmd: cmd, listen: listen, log: logPath}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", listen); err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logPath)
			t.Fatalf("proxy did not listen on %s:\n%s", listen, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *proxyProcess) kill9() { p.cmd.Process.Signal(syscall.SIGKILL); p.cmd.Wait() }

func (p *proxyProcess) stop() { p.cmd.Process.Signal(syscall.SIGTERM); p.cmd.Wait() }

// producer writes sequence-numbered records to topic through addr until
// stopped, counting acknowledgements.
type producer struct {
	acked  atomic.Int64
	failed atomic.Int64
	stopCh chan struct{}
	done   chan struct{}
}

func startProducer(t *testing.T, addr, topic string, max, perSecond int) *producer {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	p := &producer{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer cl.Close()
		ctx := context.Background()
		start := time.Now()
		for i := 0; i < max; i++ {
			if perSecond > 0 {
				if ahead := time.Duration(i)*time.Second/time.Duration(perSecond) - time.Since(start); ahead > 0 {
					time.Sleep(ahead)
				}
			}
			select {
			case <-p.stopCh:
				cl.Flush(ctx)
				return
			default:
			}
			cl.Produce(ctx, &kgo.Record{Key: []byte(fmt.Sprint(i % 64)), Value: []byte(fmt.Sprintf("%08d-%s", i, pad))}, func(_ *kgo.Record, err error) {
				if err != nil {
					p.failed.Add(1)
				} else {
					p.acked.Add(1)
				}
			})
		}
		cl.Flush(ctx)
	}()
	return p
}

func (p *producer) wait() { <-p.done }

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func endOffsetsSum(t *testing.T, addr, topic string) int64 {
	return targetRecords(t, []string{addr}, topic)
}

// TestKill9WhileMirroring kills the proxy with SIGKILL twice while it mirrors
// at full speed; after restarts the target holds exactly the source's
// records: none twice, none missing, same order, and the map is exact.
func TestKill9WhileMirroring(t *testing.T) {
	src, dst := realSource.Get(t), realTarget.Get(t)
	topic := "kill9"
	createTopic(t, src.Bootstrap(), topic, 4)
	dataDir := t.TempDir()
	listen := freeAddr(t)
	args := []string{"--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(), "--topics", topic, "--data-dir", dataDir}

	p := startProxyProcess(t, listen, args...)
	prod := startProducer(t, src.Bootstrap(), topic, 150_000, 0)
	for kill := 0; kill < 2; kill++ {
		waitUntil(t, "the mirror to be copying", 60*time.Second, func() bool { return endOffsetsSum(t, dst.Bootstrap(), topic) > int64(20_000*(kill+1)) })
		p.kill9()
		t.Logf("kill -9 #%d with %d records in the target", kill+1, endOffsetsSum(t, dst.Bootstrap(), topic))
		p = startProxyProcess(t, listen, args...)
	}
	prod.wait()
	if prod.failed.Load() != 0 {
		t.Fatalf("%d produces failed", prod.failed.Load())
	}
	want := prod.acked.Load()
	waitUntil(t, "the mirror to catch up", 2*time.Minute, func() bool { return endOffsetsSum(t, dst.Bootstrap(), topic) >= want })
	p.stop()
	maps, err := OpenFileMaps(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer maps.Close()
	if got := endOffsetsSum(t, dst.Bootstrap(), topic); got != want {
		t.Fatalf("target holds %d records, source %d", got, want)
	}
	checkExactAddrs(t, []string{src.Bootstrap()}, []string{dst.Bootstrap()}, maps, topic, 4)
}

// TestTargetOutage stops the target for 30 s while clients produce through
// the proxy: the proxy keeps serving, the mirror's lag grows, then drains to
// zero after the target returns, with nothing lost or doubled.
func TestTargetOutage(t *testing.T) {
	src := realSource.Get(t)
	dst := kafkatest.StartT(t, kafkatest.Options{Name: "target-outage"})
	topic := "outage"
	createTopic(t, src.Bootstrap(), topic, 3)
	dataDir := t.TempDir()
	listen := freeAddr(t)
	p := startProxyProcess(t, listen, "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(), "--topics", topic, "--data-dir", dataDir)

	prod := startProducer(t, listen, topic, 1<<30, 5000) // through the proxy
	waitUntil(t, "mirroring to start", 60*time.Second, func() bool { return endOffsetsSum(t, dst.Bootstrap(), topic) > 1000 })
	dst.Stop()
	before := prod.acked.Load()
	time.Sleep(30 * time.Second)
	during := prod.acked.Load() - before
	if err := dst.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	close(prod.stopCh)
	prod.wait()
	if during < 1000 || prod.failed.Load() != 0 {
		t.Fatalf("while the target was down the proxy acknowledged %d records and failed %d; it must keep serving", during, prod.failed.Load())
	}
	want := prod.acked.Load()
	start := time.Now()
	waitUntil(t, "the mirror to drain", 3*time.Minute, func() bool { return endOffsetsSum(t, dst.Bootstrap(), topic) >= want })
	t.Logf("target down 30 s: %d records acknowledged meanwhile; drained %s after the producer stopped", during, time.Since(start).Round(time.Millisecond))
	p.stop()
	maps, err := OpenFileMaps(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer maps.Close()
	checkExactAddrs(t, []string{src.Bootstrap()}, []string{dst.Bootstrap()}, maps, topic, 3)
}

func createTopic(t *testing.T, addr, topic string, partitions int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create %s: %v", topic, err)
	}
}

// TestSyncProduceMode: with --produce-mode sync, a record acknowledged
// through the proxy is already in the target when the acknowledgement
// arrives.
func TestSyncProduceMode(t *testing.T) {
	src, dst := realSource.Get(t), realTarget.Get(t)
	topic := "sync-mode"
	createTopic(t, src.Bootstrap(), topic, 2)
	listen := freeAddr(t)
	startProxyProcess(t, listen, "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", topic, "--data-dir", t.TempDir(), "--produce-mode", "sync")
	cl, err := kgo.NewClient(kgo.SeedBrokers(listen), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var slowest time.Duration
	for i := 0; i < 300; i++ {
		start := time.Now()
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(fmt.Sprint(i % 5)), Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
		slowest = max(slowest, time.Since(start))
		if got := endOffsetsSum(t, dst.Bootstrap(), topic); got < int64(i+1) {
			t.Fatalf("record %d acknowledged in sync mode but the target holds only %d records", i, got)
		}
	}
	t.Logf("300 sync produces, slowest acknowledgement %s", slowest)
}

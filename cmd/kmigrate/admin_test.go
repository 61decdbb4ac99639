package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// adminNode is an in-process kmigrate node in front of an embedded source
// cluster, mirroring to an embedded target, with a consumer group running
// through it, as the demo starts one.
type adminNode struct {
	admin, listen, topic, group string
	source, target              string // the embedded clusters' addresses
	work                        *demoWorkload
}

const testToken = "s3cret-token"

func startAdminNode(t *testing.T, extra ...string) *adminNode {
	t.Helper()
	src, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	dst, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dst.Close)
	n := &adminNode{topic: "status-orders", group: "status-page-app",
		source: src.ListenAddrs()[0], target: dst.ListenAddrs()[0]}
	if err := createDemoTopic(context.Background(), src.ListenAddrs()[0], n.topic, 3); err != nil {
		t.Fatal(err)
	}
	var ctx context.Context
	var cancel context.CancelFunc
	var done chan error
	// A port freePort found free can be taken by another test before the
	// node binds it: then the node is started again on new ports.
	for attempt := 1; ; attempt++ {
		n.admin, n.listen = freePort(), freePort()
		ctx, cancel = context.WithCancel(context.Background())
		done = make(chan error, 1)
		ready := make(chan struct{})
		go func() {
			done <- serveProxy(ctx, append([]string{
				"--source-bootstrap", src.ListenAddrs()[0], "--target-bootstrap", dst.ListenAddrs()[0], "--topics", n.topic,
				"--listen", n.listen, "--admin-listen", n.admin, "--raft-addr", freePort(), "--data-dir", t.TempDir(),
				"--log-level", "error",
			}, extra...), func() { close(ready) })
		}()
		var err error
		select {
		case <-ready:
		case err = <-done:
			cancel()
		case <-time.After(60 * time.Second):
			cancel()
			t.Fatal("node did not start within 60 s")
		}
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 3 {
			t.Fatalf("node did not start: %v", err)
		}
		t.Logf("node did not start (attempt %d), again on other ports: %v", attempt, err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node: %v", err)
		}
	})
	n.work = newDemoWorkload(n.listen, n.topic, n.group)
	if err := n.work.start(ctx, 300); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.work.close)
	waitUntil(t, 30*time.Second, "the group to consume through the proxy", func() bool {
		_, consumed := n.work.counts()
		return consumed > 100
	})
	return n
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// call sends one request to the node's admin API; token "" sends none.
func (n *adminNode) call(t *testing.T, method, path, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+n.admin+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func TestAdminRefusesNonLoopbackWithoutToken(t *testing.T) {
	t.Setenv(adminTokenEnv, "")
	port := freePort()[len("127.0.0.1:"):]
	err := serveProxy(context.Background(), []string{"--source-bootstrap", "127.0.0.1:1", "--admin-listen", "0.0.0.0:" + port,
		"--data-dir", t.TempDir()}, nil)
	if err == nil || !strings.Contains(err.Error(), "--admin-token") || !strings.Contains(err.Error(), adminTokenEnv) {
		t.Fatalf("want a refusal naming --admin-token and %s, got %v", adminTokenEnv, err)
	}
}

func TestAdminLoopbackTokenFromEnv(t *testing.T) {
	if got := checkAdminExposure(mustListen(t, "127.0.0.1:0"), ""); got != nil {
		t.Fatalf("loopback without token refused: %v", got)
	}
	if got := checkAdminExposure(mustListen(t, "0.0.0.0:0"), "t"); got != nil {
		t.Fatalf("all interfaces with a token refused: %v", got)
	}
	t.Setenv(adminTokenEnv, "from-env")
	if got := adminToken(""); got != "from-env" {
		t.Fatalf("adminToken from env = %q", got)
	}
	if got := adminToken("flag"); got != "flag" {
		t.Fatalf("the flag must win over the env, got %q", got)
	}
}

func mustListen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestAdminAPI runs one node with a token and checks the API, the CLI and
// the status page in headless Chromium against it.
func TestAdminAPI(t *testing.T) {
	t.Setenv(adminTokenEnv, "")
	n := startAdminNode(t, "--admin-token", testToken)

	// A cutover through the API, so that the group is in the control plane
	// and in the recent flips.
	if code, body := n.call(t, http.MethodPost, "/v1/groups/"+n.group+"/cutover", testToken); code != http.StatusOK {
		t.Fatalf("cutover: %d %s", code, body)
	}

	t.Run("token", func(t *testing.T) {
		for _, path := range []string{"/v1/status", "/v1/groups/" + n.group, "/v1/nodes", "/v1/changes", "/v1/writers", "/healthz", "/metrics", "/debug/pprof/"} {
			if code, body := n.call(t, http.MethodGet, path, ""); code != http.StatusUnauthorized {
				t.Errorf("GET %s without a token: %d %s, want 401", path, code, body)
			}
			if code, _ := n.call(t, http.MethodGet, path, "wrong"); code != http.StatusUnauthorized {
				t.Errorf("GET %s with a wrong token: %d, want 401", path, code)
			}
			if code, body := n.call(t, http.MethodGet, path, testToken); code != http.StatusOK {
				t.Errorf("GET %s with the token: %d %s, want 200", path, code, body)
			}
		}
		for _, path := range []string{"/v1/groups/" + n.group + "/rollback", "/v1/raftstore/join", "/v1/raftstore/apply"} {
			if code, _ := n.call(t, http.MethodPost, path, ""); code != http.StatusUnauthorized {
				t.Errorf("POST %s without a token: %d, want 401", path, code)
			}
		}
		// The page itself carries no data: it loads without the token.
		for _, path := range []string{"/", "/ui/app.js", "/ui/style.css"} {
			if code, _ := n.call(t, http.MethodGet, path, ""); code != http.StatusOK {
				t.Errorf("GET %s: %d, want 200 without a token", path, code)
			}
		}
		if code, _ := n.call(t, http.MethodGet, "/ui/nope.js", ""); code != http.StatusNotFound {
			t.Errorf("GET /ui/nope.js: %d, want 404", code)
		}
	})

	t.Run("status JSON", func(t *testing.T) {
		// Wait until the mirror knows every partition and has caught up once.
		var st Status
		waitUntil(t, 20*time.Second, "the mirror's status of 3 partitions", func() bool {
			code, body := n.call(t, http.MethodGet, "/v1/status", testToken)
			if code != http.StatusOK {
				t.Fatalf("status: %d %s", code, body)
			}
			st = Status{}
			if err := json.Unmarshal(body, &st); err != nil {
				t.Fatal(err)
			}
			return len(st.Topics) == 1 && len(st.Topics[0].Partitions) == 3 && st.Topics[0].Partitions[2].LagRecords != nil
		})
		_, body := n.call(t, http.MethodGet, "/v1/status", testToken)
		var raw map[string]any
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"node", "leader", "applied_index", "time", "clusters", "nodes", "topics", "groups", "flips", "mirror"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("status has no %q: %s", k, body)
			}
		}
		node := raw["nodes"].([]any)[0].(map[string]any)
		for _, k := range []string{"id", "address", "voter", "applied_index", "live", "leader"} {
			if _, ok := node[k]; !ok {
				t.Errorf("node has no %q: %v", k, node)
			}
		}
		part := raw["topics"].([]any)[0].(map[string]any)["partitions"].([]any)[0].(map[string]any)
		for _, k := range []string{"partition", "writer", "local", "lag_records", "lag_ms", "next_source_offset"} {
			if _, ok := part[k]; !ok {
				t.Errorf("partition has no %q: %v", k, part)
			}
		}

		if len(st.Nodes) != 1 || st.Nodes[0].ID != st.Node || !st.Nodes[0].Live || !st.Nodes[0].Leader || !st.Nodes[0].Voter || st.Nodes[0].Address != n.admin {
			t.Errorf("nodes: %+v (this node %s)", st.Nodes, st.Node)
		}
		if st.Leader != st.Node || st.AppliedIndex == 0 {
			t.Errorf("leader %q applied %d", st.Leader, st.AppliedIndex)
		}
		if len(st.Clusters.Source) != 1 || len(st.Clusters.Target) != 1 || !st.Mirror.Configured || !st.Mirror.Running {
			t.Errorf("clusters %+v mirror %+v", st.Clusters, st.Mirror)
		}
		topic := st.Topics[0]
		if topic.Topic != n.topic || topic.Producers != "source" {
			t.Errorf("topic: %+v", topic)
		}
		for i, p := range topic.Partitions {
			if p.Partition != int32(i) || !p.Local || p.Writer != st.Node || p.LagRecords == nil || p.LagMs == nil || *p.LagRecords < 0 || *p.LagMs < 0 {
				t.Errorf("partition %d: %+v", i, p)
			}
		}
		if len(st.Groups) != 1 || st.Groups[0].Group != n.group || st.Groups[0].Phase != "target" || st.Groups[0].Epoch == 0 {
			t.Errorf("groups: %+v", st.Groups)
		}
		if len(st.Flips) != 1 || st.Flips[0].Group != n.group || st.Flips[0].Verb != "cutover" || st.Flips[0].To != "target" || st.Flips[0].Error != "" {
			t.Errorf("flips: %+v", st.Flips)
		}
	})

	t.Run("CLI status", func(t *testing.T) {
		var out bytes.Buffer
		if err := runStatus([]string{"--admin", n.admin, "--admin-token", testToken}, &out); err != nil {
			t.Fatal(err)
		}
		text := out.String()
		for _, want := range []string{"NODES", "TOPICS", "GROUPS", "RECENT FLIPS", n.topic, n.group, "target", "leader,writer", "LAG RECORDS"} {
			if !strings.Contains(text, want) {
				t.Errorf("status output lacks %q:\n%s", want, text)
			}
		}
		t.Logf("kmigrate status:\n%s", text)

		out.Reset()
		t.Setenv(adminTokenEnv, testToken) // the CLI takes the token from the environment too
		if err := runStatus([]string{"--admin", n.admin, "--json"}, &out); err != nil {
			t.Fatal(err)
		}
		var st Status
		if err := json.Unmarshal(out.Bytes(), &st); err != nil || len(st.Groups) != 1 {
			t.Errorf("--json: %v %s", err, out.String())
		}

		t.Setenv(adminTokenEnv, "")
		err := runStatus([]string{"--admin", n.admin}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--admin-token") {
			t.Errorf("without a token: want an error naming --admin-token, got %v", err)
		}
		err = runStatus([]string{"--admin", n.admin, "--admin-token", "wrong"}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "refused the token") {
			t.Errorf("wrong token: want a refusal, got %v", err)
		}
	})

	t.Run("CLI group commands send the token", func(t *testing.T) {
		if err := runGroupCommand("rollback", []string{"group", n.group, "--admin", n.admin}); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("rollback without a token: want 401, got %v", err)
		}
		if err := runGroupCommand("rollback", []string{"group", n.group, "--admin", n.admin, "--admin-token", testToken}); err != nil {
			t.Fatal(err)
		}
		if code, body := n.call(t, http.MethodGet, "/v1/groups/"+n.group, testToken); code != http.StatusOK || !strings.Contains(string(body), `"source"`) {
			t.Errorf("after rollback: %d %s", code, body)
		}
		if err := runGroupCommand("cutover", []string{"group", n.group, "--admin", n.admin, "--admin-token", testToken}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("OpenAPI paths are served", func(t *testing.T) {
		ops := openAPIOperations(t)
		if len(ops) < 15 {
			t.Fatalf("docs/openapi.yaml: only %d operations found", len(ops))
		}
		fill := strings.NewReplacer("{group}", n.group, "{index}", "1", "{file}", "app.js")
		for _, op := range ops {
			path := fill.Replace(op[1])
			switch op[0] {
			case "get":
				if code, body := n.call(t, http.MethodGet, path, testToken); code != http.StatusOK {
					t.Errorf("openapi GET %s: %d %s", op[1], code, body)
				}
			case "post":
				// Without side effects: the route exists when another
				// method is refused with 405.
				if code, body := n.call(t, http.MethodGet, path, testToken); code != http.StatusMethodNotAllowed {
					t.Errorf("openapi POST %s: GET answered %d %s, want 405 (is the route registered?)", op[1], code, body)
				}
			default:
				t.Errorf("openapi %s %s: method not checked", op[0], op[1])
			}
		}
	})

	t.Run("page in headless Chromium", func(t *testing.T) {
		testStatusPage(t, n)
	})
}

// chromium finds the headless browser; a missing one fails the test:
// scripts/install-test-deps.sh (make test) installs it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed: the status page test needs it (run scripts/install-test-deps.sh, or apt-get install chromium)")
	return ""
}

func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir(), "--window-size=1200,800", "--virtual-time-budget=5000"}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

func testStatusPage(t *testing.T, n *adminNode) {
	bin := chromium(t)
	// The token goes in the fragment: the page keeps it and sends it as a
	// bearer token; the fragment never reaches the server.
	url := fmt.Sprintf("http://%s/#token=%s", n.admin, testToken)

	dom := string(runChromium(t, bin, "--dump-dom", url))
	for _, want := range []string{n.group, n.topic, "target", "Consumer groups"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page's DOM lacks %q:\n%s", want, dom)
		}
	}
	if strings.Contains(dom, "requires an admin token") || strings.Contains(dom, "cannot read /v1/status") {
		t.Errorf("the page shows an error:\n%s", dom)
	}

	shot := filepath.Join(t.TempDir(), "status.png")
	runChromium(t, bin, "--screenshot="+shot, url)
	info, err := os.Stat(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	if info.Size() < 10_000 {
		t.Errorf("screenshot is only %d bytes", info.Size())
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 800 {
		t.Errorf("screenshot is %dx%d, want 1200x800", b.Dx(), b.Dy())
	}
	if c := colours(img); c < 10 {
		t.Errorf("screenshot has %d colours: the page did not render", c)
	}
	if dir := os.Getenv("KMIGRATE_SCREENSHOT_DIR"); dir != "" {
		b, _ := os.ReadFile(shot)
		_ = os.WriteFile(filepath.Join(dir, "status-page.png"), b, 0o644)
	}
}

// colours counts distinct colours, up to 1000.
func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
			if len(seen) >= 1000 {
				return len(seen)
			}
		}
	}
	return len(seen)
}

// openAPIOperations lists (method, path) of docs/openapi.yaml.
func openAPIOperations(t *testing.T) [][2]string {
	b, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ops [][2]string
	inPaths, path := false, ""
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case line == "paths:":
			inPaths = true
		case inPaths && line != "" && !strings.HasPrefix(line, " "):
			inPaths = false
		case inPaths && strings.HasPrefix(line, "  /") && strings.HasSuffix(line, ":"):
			path = strings.TrimSuffix(strings.TrimSpace(line), ":")
		case inPaths && len(line) > 4 && strings.HasPrefix(line, "    ") && line[4] != ' ' && strings.HasSuffix(line, ":"):
			if m := strings.TrimSuffix(strings.TrimSpace(line), ":"); m == "get" || m == "post" || m == "put" || m == "delete" {
				ops = append(ops, [2]string{m, path})
			}
		}
	}
	return ops
}

// TestAdminTokenBetweenNodes: with a token, a node joins and reports to
// the leader through the protected admin API (raftstore sends the token).
func TestAdminTokenBetweenNodes(t *testing.T) {
	t.Setenv(adminTokenEnv, testToken) // both nodes take it from the environment
	src, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	start := func(admin string, extra ...string) {
		ctx, cancel := context.WithCancel(context.Background())
		done, ready := make(chan error, 1), make(chan struct{})
		go func() {
			done <- serveProxy(ctx, append([]string{"--source-bootstrap", src.ListenAddrs()[0], "--listen", freePort(),
				"--admin-listen", admin, "--raft-addr", freePort(), "--data-dir", t.TempDir(), "--log-level", "error"}, extra...),
				func() { close(ready) })
		}()
		select {
		case <-ready:
		case err := <-done:
			cancel()
			t.Fatalf("node %s: %v", admin, err)
		case <-time.After(60 * time.Second):
			cancel()
			t.Fatalf("node %s did not start", admin)
		}
		t.Cleanup(func() { cancel(); <-done })
	}
	a, b := freePort(), freePort()
	start(a, "--raft-voter")
	start(b, "--join", a)
	n := &adminNode{admin: a}
	waitUntil(t, 20*time.Second, "two live nodes, the joined one reporting", func() bool {
		code, body := n.call(t, http.MethodGet, "/v1/status", testToken)
		var st Status
		if code != http.StatusOK || json.Unmarshal(body, &st) != nil || len(st.Nodes) != 2 {
			return false
		}
		for _, nd := range st.Nodes {
			if !nd.Live || nd.Applied == 0 {
				return false
			}
		}
		return true
	})
}

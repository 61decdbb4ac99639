# kmigrate — see README.md. `make demo` is the main job; `make test` is the
# one test command (CI runs it through .ci/run); `make run` starts a real
# Kafka with the proxy in front.
GO        ?= go
PKGS      := ./...
FUZZTIME  ?= 30s

.PHONY: build test test-faults soak unit deps vet fuzz bench bench-controlplane run clean

build:
	$(GO) build -o bin/kmigrate ./cmd/kmigrate

# The main job: a whole migration on embedded clusters, with a verdict.
demo: build
	bin/kmigrate demo

# Everything: installs the non-Go prerequisites (Kafka jars via mvn, kcat via
# apt-get, confluent-kafka via pip), vets, then runs unit, fuzz-seed and
# real-Kafka integration tests.
test: deps vet
	$(GO) test -count=1 -timeout 28m $(PKGS)

# The fault tests alone (they also run in `make test`): processes killed,
# brokers stopped, links cut or slowed (toxiproxy), a node killed mid-flip, a
# slow client. Each asserts 0 lost, 0 duplicated, 0 reordered and logs its
# row (internal/faultrow); internal/faulttable prints the table (case, test,
# PASS/FAIL, outcome, recovery) at the end and fails if any test failed or
# was skipped. Kept under 20 minutes on 2 cores; docs/reliability.md
# records the table as measured.
FAULTS_DIR         ?= $(or $(TMPDIR),/tmp)/kmigrate-faults
# TestFault matches every TestFault* test (TestFaultSourceBrokerKilled,
# TestFaultTargetBrokerKilled, TestFaultControlPlaneDuringFlips, ...).
FAULTS_INTEGRATION := TestBrokerRestart|TestTopicFlipNodeKilledMidFlip|TestTopicFlipRetriedBatch|TestMigrationFranzGo|TestTopicCutoverTwoNodes|TestFault|TestProduceCutThroughRealClients
FAULTS_MIRROR      := TestKill9WhileMirroring|TestTargetOutage|TestWriterMovesAfterKill9
test-faults: deps
	@rm -rf $(FAULTS_DIR) && mkdir -p $(FAULTS_DIR)
	$(GO) build -o $(FAULTS_DIR)/faulttable ./internal/faulttable
	-$(GO) test -json -count=1 -timeout 15m -run '$(FAULTS_INTEGRATION)' ./integration | $(FAULTS_DIR)/faulttable -live $(FAULTS_DIR)/integration.json
	-$(GO) test -json -count=1 -timeout 10m -run '$(FAULTS_MIRROR)' ./replicate | $(FAULTS_DIR)/faulttable -live $(FAULTS_DIR)/replicate.json
	-$(GO) test -json -count=1 -timeout 5m -run 'TestControlPlaneProcesses' ./cmd/kmigrate | $(FAULTS_DIR)/faulttable -live $(FAULTS_DIR)/controlplane.json
	@echo; echo "## Fault table"; echo
	@$(FAULTS_DIR)/faulttable $(FAULTS_DIR)/integration.json $(FAULTS_DIR)/replicate.json $(FAULTS_DIR)/controlplane.json

# Not in CI: load through a 2-node fleet with a topic and a group flip (or
# rollback) every minute; RSS and goroutines sampled every 10 s must stay
# flat, 0 lost / 0 duplicated. SOAK=30m by default; docs/reliability.md.
SOAK ?= 30m
soak: deps
	KMIGRATE_SOAK=$(SOAK) $(GO) test -tags soak -count=1 -timeout 0 -v -run 'TestSoak' ./integration

# Fast tests only (kfake, fuzz seed corpora); no Kafka needed.
unit:
	$(GO) test -count=1 -short ./protocol/... ./proxy/...

deps:
	scripts/install-test-deps.sh

vet:
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

# Longer fuzzing of every target, one after the other (FUZZTIME each,
# default 30s here; 10m for the record in docs/reliability.md); the inputs
# found are kept in testdata/fuzz, which `make test` replays.
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz-all.sh

bench: deps
	$(GO) run ./bench/cmd/kmigrate-bench -out docs/benchmarks.md
	$(GO) run ./bench/cmd/kmigrate-bench -relay -suites produce,consume,latency,latency-paired -out docs/benchmarks.md
	$(GO) run ./bench/cmd/kmigrate-bench -baseline relay -suites produce,consume,latency,latency-paired -out docs/benchmarks.md
	$(MAKE) bench-controlplane

# Raft apply throughput and commit latency, memory and snapshot size per
# 1,000,000 map segments (docs/benchmarks.md, "Control plane").
bench-controlplane:
	$(GO) test -run '^$$' -bench 'ApplyThroughput' -benchtime 20000x ./raftstore
	$(GO) test -run '^$$' -bench 'ApplyLatency' -benchtime 300x ./raftstore
	$(GO) test -run '^$$' -bench 'SegmentMemory' -benchtime 1x ./raftstore

run:
	scripts/run-local.sh

clean:
	rm -rf bin

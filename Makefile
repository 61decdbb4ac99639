# kmigrate — see README.md. `make demo` is the main job; `make test` is the
# one test command (CI runs it through .ci/run); `make run` starts a real
# Kafka with the proxy in front.
GO        ?= go
PKGS      := ./...
FUZZTIME  ?= 30s

.PHONY: build test test-faults unit deps vet fuzz bench bench-controlplane run clean

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

# The fault tests alone, verbose (they also run in `make test`): processes
# killed, brokers stopped, links cut, a node killed mid-flip. Each asserts 0
# lost, 0 duplicated, 0 reordered; docs/reliability.md records their numbers.
FAULTS_INTEGRATION := TestBrokerRestart|TestTopicFlipNodeKilledMidFlip|TestMigrationFranzGo|TestTopicCutoverTwoNodes
FAULTS_MIRROR      := TestKill9WhileMirroring|TestTargetOutage|TestWriterMovesAfterKill9
test-faults: deps
	$(GO) test -count=1 -timeout 20m -v -run '$(FAULTS_INTEGRATION)' ./integration
	$(GO) test -count=1 -timeout 20m -v -run '$(FAULTS_MIRROR)' ./replicate
	$(GO) test -count=1 -timeout 20m -v -run 'TestControlPlaneProcesses' ./cmd/kmigrate

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

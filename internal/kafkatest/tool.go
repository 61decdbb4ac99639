package kafkatest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Main classes of Kafka 4.1.1's server and CLI tools (as listed from the
// jars), for Tool and ToolCmd. The shell scripts of the official tarball
// (kafka-topics.sh, ...) are thin wrappers around these.
const (
	MainKafka             = "kafka.Kafka"             // broker: kafka-server-start.sh
	MainStorageTool       = "kafka.tools.StorageTool" // kafka-storage.sh
	MainConfigCommand     = "kafka.admin.ConfigCommand"
	MainTopicCommand      = "org.apache.kafka.tools.TopicCommand"
	MainConsoleProducer   = "org.apache.kafka.tools.ConsoleProducer"
	MainConsoleConsumer   = "org.apache.kafka.tools.consumer.ConsoleConsumer"
	MainConsumerGroups    = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
	MainShareGroups       = "org.apache.kafka.tools.consumer.group.ShareGroupCommand"
	MainGroupsCommand     = "org.apache.kafka.tools.GroupsCommand"
	MainProducerPerf      = "org.apache.kafka.tools.ProducerPerformance"
	MainConsumerPerf      = "org.apache.kafka.tools.ConsumerPerformance"
	MainVerifiableProd    = "org.apache.kafka.tools.VerifiableProducer"
	MainVerifiableCons    = "org.apache.kafka.tools.VerifiableConsumer"
	MainAclCommand        = "org.apache.kafka.tools.AclCommand"
	MainTransactions      = "org.apache.kafka.tools.TransactionsCommand"
	MainBrokerAPIVersions = "org.apache.kafka.tools.BrokerApiVersionsCommand"
	MainDeleteRecords     = "org.apache.kafka.tools.DeleteRecordsCommand"
	MainLogDirs           = "org.apache.kafka.tools.LogDirsCommand"
	MainMetadataQuorum    = "org.apache.kafka.tools.MetadataQuorumCommand"
	MainFeatureCommand    = "org.apache.kafka.tools.FeatureCommand"
	MainClusterTool       = "org.apache.kafka.tools.ClusterTool"
	MainLeaderElection    = "org.apache.kafka.tools.LeaderElectionCommand"
	MainReassign          = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
	MainMirrorMaker2      = "org.apache.kafka.connect.mirror.MirrorMaker" // connect-mirror-maker.sh
	// The exactly-once consume-transform-produce tool of Kafka's system
	// tests (the Java client's transactions with group metadata).
	MainTxnCopier = "org.apache.kafka.tools.TransactionalMessageCopier"
)

// longRunning tools measure or move data, so they get the full JIT and a
// bigger heap. Every other tool runs for a second or two, where the C1-only
// JIT (-XX:TieredStopAtLevel=1) starts markedly faster.
var longRunning = map[string]bool{
	MainKafka:          true,
	MainProducerPerf:   true,
	MainConsumerPerf:   true,
	MainVerifiableProd: true,
	MainVerifiableCons: true,
	MainMirrorMaker2:   true,
}

// ToolCmd returns an unstarted command running mainClass from the Kafka jars
// with args, for streaming use: set Stdin/Stdout/Stderr or call the Pipe
// methods, then Start and Wait. The JVM gets its own process group and dies
// with the test binary (Linux); cancelling ctx kills the whole group. The
// jars are fetched first if this process has not done so yet.
func ToolCmd(ctx context.Context, mainClass string, args ...string) (*exec.Cmd, error) {
	cmd, _, err := toolCmd(ctx, false, mainClass, args...)
	return cmd, err
}

// toolCmd builds the command for ToolCmd and ToolStdin. With dumpCDS the JVM
// may dump a class archive, and finish must run after it exits.
func toolCmd(ctx context.Context, dumpCDS bool, mainClass string, args ...string) (cmd *exec.Cmd, finish func(*os.ProcessState), err error) {
	libs, err := LibsDir(ctx)
	if err != nil {
		return nil, nil, err
	}
	java, err := javaPath()
	if err != nil {
		return nil, nil, err
	}
	jvm := []string{"-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"}
	if longRunning[mainClass] {
		jvm = []string{"-Xmx1g", "-XX:+UseSerialGC"}
	}
	cds, finish := cdsFlags(libs, java, archiveName(mainClass), dumpCDS)
	jvm = append(jvm, cds...)
	jvm = append(jvm,
		"-XX:-UsePerfData",
		"-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile="+filepath.Join(libs, "log4j2.properties"),
		"-cp", filepath.Join(libs, "*"),
		mainClass)
	cmd = exec.CommandContext(ctx, java, append(jvm, args...)...)
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error {
		signalGroup(cmd.Process, syscall.SIGKILL)
		return nil
	}
	// Do not let Wait hang on output pipes a stray grandchild keeps open.
	cmd.WaitDelay = 5 * time.Second
	return cmd, finish, nil
}

// Tool runs mainClass to completion and returns its stdout and stderr. A
// non-zero exit is an error that quotes the end of stderr.
func Tool(ctx context.Context, mainClass string, args ...string) (stdout, stderr string, err error) {
	return ToolStdin(ctx, nil, mainClass, args...)
}

// ToolStdin is Tool with stdin, e.g. records for the console producer.
func ToolStdin(ctx context.Context, stdin io.Reader, mainClass string, args ...string) (stdout, stderr string, err error) {
	cmd, finish, err := toolCmd(ctx, true, mainClass, args...)
	if err != nil {
		return "", "", err
	}
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	err = cmd.Run()
	finish(cmd.ProcessState)
	if err != nil {
		tail := strings.TrimSpace(errb.String())
		if len(tail) > 4000 {
			tail = "..." + tail[len(tail)-4000:]
		}
		return out.String(), errb.String(), fmt.Errorf("kafkatest: %s %s: %w\n%s",
			shortClass(mainClass), strings.Join(args, " "), err, tail)
	}
	return out.String(), errb.String(), nil
}

func shortClass(mainClass string) string {
	return mainClass[strings.LastIndex(mainClass, ".")+1:]
}

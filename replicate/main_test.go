package replicate

import (
	"os"
	"testing"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

func TestMain(m *testing.M) { os.Exit(kafkatest.RunMain(m)) }

package raftstore_test

import (
	"context"
	"fmt"

	"github.com/kmigrate/kmigrate/raftstore"
)

// A cutover driven on Memory, as a unit test of another package would.
func ExampleMemory() {
	ctx := context.Background()
	m := raftstore.NewMemory()
	for _, p := range []raftstore.GroupPhase{raftstore.GroupDraining, raftstore.GroupFenced, raftstore.GroupTarget} {
		if _, err := m.Apply(ctx, raftstore.SetGroupPhase{Group: "billing", Phase: p}); err != nil {
			fmt.Println(err)
		}
	}
	g, _ := m.State().Group("billing")
	fmt.Println(g.Phase, g.Epoch)

	// Starting the cutover again is refused; repeating the flip is harmless.
	_, err := m.Apply(ctx, raftstore.SetGroupPhase{Group: "billing", Phase: raftstore.GroupDraining})
	fmt.Println(err)
	res, err := m.Apply(ctx, raftstore.SetGroupPhase{Group: "billing", Phase: raftstore.GroupTarget})
	fmt.Println(res.Changed, res.Epoch, err)
	// Output:
	// target 3
	// invalid transition: group "billing" is target: it can go to [rollback-draining], not draining
	// false 3 <nil>
}

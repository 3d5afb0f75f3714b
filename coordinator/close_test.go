package coordinator

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCloseAnswersQueuedCommands closes a leader while many registrations
// are on their way into its log. Every call returns: committed, or refused
// because the node closed. Raft buffers commands before its main loop
// takes them (Config.BatchApplyCh) and answers none of those left in the
// buffer at Shutdown, so a call that queued one just before Close used to
// wait forever (found by the nemesis test: clients stuck in Submit on a
// killed leader).
func TestCloseAnswersQueuedCommands(t *testing.T) {
	for attempt := 0; attempt < 5; attempt++ {
		nodes := inmemCluster(t, 1, testRun(0))
		leader := leaderOf(t, nodes)
		waitFor(t, "init", func() bool { return leader.FSM().Progress().Initialised })
		const callers = 32
		var wg sync.WaitGroup
		var returned atomic.Int64
		start := make(chan struct{})
		for k := 0; k < callers; k++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := 0; ; i++ {
					_, _, err := leader.Register(fmt.Sprintf("c%d-%d", k, i), "s3cret", 1)
					if err != nil {
						break
					}
				}
				returned.Add(1)
			}()
		}
		close(start)
		waitFor(t, "registrations", func() bool { return leader.FSM().Progress().Clients > 64 })
		leader.Close()
		deadline := time.Now().Add(10 * time.Second)
		for returned.Load() < callers {
			if time.Now().After(deadline) {
				t.Fatalf("attempt %d: %d of %d callers still blocked in Register after Close", attempt, callers-returned.Load(), callers)
			}
			time.Sleep(5 * time.Millisecond)
		}
		wg.Wait()
	}
}

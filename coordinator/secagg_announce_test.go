package coordinator

import (
	"bytes"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/secagg"
)

// saAnnouncedRun is saRun with an announced support: a quarter of the
// coordinates, in blocks of 4.
func saAnnouncedRun(n int) *RunConfig {
	run := saRun(n)
	run.SecAgg.Fraction = 0.25
	run.SecAgg.Support = "announced,block=4"
	return run
}

// saPlay runs round o's protocol through h's FSM from t0: each selected
// client starts at the advertise step with delta(id) and answers every
// step's task; tamper, if set, may change a client's task first (a
// coordinator that lies to it). A client whose answer fails, or whose
// message the FSM refuses, sends nothing more. A step ends as soon as
// every client it expects has answered, else at its deadline. saPlay
// returns the answer to the entry that ended the protocol: the end of
// the unmask step, or of the step that abandoned the round.
func saPlay(t *testing.T, h *saHarness, o round.Opened, t0 time.Time, peers map[round.ClientID]*saPeer,
	delta func(round.ClientID) []float32, tamper func(round.ClientID, *SecAggTask)) saEnded {
	t.Helper()
	out := map[round.ClientID]bool{}
	for step := SecAggAdvertise; step <= SecAggUnmask; step++ {
		now := t0.Add(time.Duration(step+1) * time.Second)
		for _, id := range o.Selected {
			if out[id] {
				continue
			}
			task, err := h.f.SecAggTask(id, o.Round)
			if err != nil {
				out[id] = true
				continue
			}
			if tamper != nil {
				tamper(id, &task)
			}
			p := peers[id]
			if step == SecAggAdvertise {
				p.start(t, task, delta(id))
			}
			msg, err := p.p.Answer(task.Step, task.Msg, p.codes)
			if err == nil {
				err, _ = h.apply(command{Type: cmdSecAgg, Now: now.UnixNano(), Round: int64(o.Round), Client: id, Step: step, Payload: msg}).(error)
			}
			if err != nil {
				out[id] = true
			}
		}
		end := now
		if _, _, due := h.f.saDue(now); !due {
			end = h.f.sa.deadline(h.f.cfg.Round.Deadline, step)
		}
		e := h.must(command{Type: cmdSecAggEnd, Now: end.UnixNano(), Round: int64(o.Round), Step: step}).(saEnded)
		if e.Abandoned != "" || step == SecAggUnmask {
			return e
		}
	}
	panic("unreachable")
}

// saMean returns the mean of n clients whose codes sum to sum, as the FSM
// computes it: the sum decoded, times 1/n in float32.
func saMean(fp secagg.FixedPoint, sum []uint32, n int) []float32 {
	mean := make([]float32, len(sum))
	fp.Decode(mean, sum)
	inv := 1 / float32(n)
	for j := range mean {
		mean[j] *= inv
	}
	return mean
}

// checkMoved requires the model to have moved from before to after by
// mean[j] on coordinate idx[j] (within 1e-6), and nowhere else.
func checkMoved(t testing.TB, r int, before, after []float32, idx []int32, mean []float32) {
	t.Helper()
	on := map[int32]int{}
	for j, c := range idx {
		on[c] = j
	}
	for c := range after {
		j, ok := on[int32(c)]
		moved := float64(after[c] - before[c])
		if !ok && moved != 0 {
			t.Fatalf("round %d: coordinate %d off the support moved by %v", r, c, moved)
		}
		if ok && math.Abs(moved-float64(mean[j])) > 1e-6 {
			t.Fatalf("round %d: coordinate %d moved by %v, the mean is %v", r, c, moved, mean[j])
		}
	}
}

// restoredFSM returns a fresh FSM restored from f's snapshot.
func restoredFSM(t *testing.T, f *FSM) *FSM {
	t.Helper()
	g := NewFSM()
	if err := g.Restore(nopCloser{bytes.NewBuffer(stateBytes(t, f))}); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestSecAggAnnouncedFSM runs four rounds with an announced support
// through the FSM's entries, on a virtual clock, checking a snapshot and
// a restore after every entry. Each round's support and announcement are
// exactly those of a secagg.Importance that observed the published means
// of the rounds before (the simulator's calls), and differ from a
// random-k support once it has; every client rebuilds that support from
// its task; an FSM restored mid-round announces the same; the recovered
// sum is the plain sum of the clients' codes, and the model moves by
// their mean on the announced coordinates and nowhere else.
func TestSecAggAnnouncedFSM(t *testing.T) {
	const n, rounds = 6, 4
	t0 := time.Unix(1000, 0).UTC()
	run := saAnnouncedRun(n)
	h, o := newSAHarnessRun(t, run, n, t0)
	var gotSum []uint32
	h.f.saSum = func(_ int, _ []uint64, sum []uint32) { gotSum = slices.Clone(sum) }
	d := h.f.Params()
	sup, err := runspec.ParseSecAggSupport(run.SecAgg.Support)
	if err != nil {
		t.Fatal(err)
	}
	blocks, explore := secagg.AnnouncedBlocks(d, int(math.Round(run.SecAgg.Fraction*float64(d))), sup.Block, sup.Explore)
	ref, fresh := secagg.NewImportance(d), secagg.NewImportance(d)
	peers := map[round.ClientID]*saPeer{}
	for _, id := range o.Selected {
		peers[id] = &saPeer{id: id}
	}
	rng := mrand.New(mrand.NewPCG(3, 4))
	// Each client's update is large on its own few coordinates, so that
	// the estimate has something to find.
	delta := func(id round.ClientID) []float32 {
		out := make([]float32, d)
		for j := range out {
			out[j] = float32(rng.NormFloat64() * 0.01)
			if j%9 == int(id)%9 {
				out[j] += 0.5
			}
		}
		return out
	}
	differs := 0
	for r := 1; r <= rounds; r++ {
		tr := t0.Add(time.Duration(r-1) * 100 * time.Second)
		if r > 1 {
			o = h.must(command{Type: cmdOpen, Now: tr.UnixNano(), Candidates: slices.Collect(func(yield func(round.ClientID) bool) {
				for id := range peers {
					if !yield(id) {
						return
					}
				}
			})}).(round.Opened)
			slices.Sort(o.Selected)
		}
		seed := round.TaskSeed(run.TaskSeed^saltSupport, r, 0)
		want, top, _ := ref.Announce(seed, sup.Block, blocks, explore)
		if random, _, _ := fresh.Announce(seed, sup.Block, blocks, explore); !slices.Equal(want, random) {
			differs++
		}
		task, err := h.f.SecAggTask(o.Selected[0], r)
		if err != nil {
			t.Fatal(err)
		}
		if msg := secagg.AppendAnnounced(nil, top, secagg.NumBlocks(d, sup.Block)); !bytes.Equal(task.Announced.Msg, msg) || task.Params.D != len(want) {
			t.Fatalf("round %d: announced %x (%d coordinates), the estimate announces %x (%d)", r, task.Announced.Msg, task.Params.D, msg, len(want))
		}
		if g := restoredFSM(t, h.f); true {
			gt, err := g.SecAggTask(o.Selected[0], r)
			if err != nil || fmt.Sprint(gt) != fmt.Sprint(task) {
				t.Fatalf("round %d: a restored FSM gives the task %+v (%v), the FSM %+v", r, gt, err, task)
			}
		}
		before, _ := h.f.Model()
		if e := saPlay(t, h, o, tr, peers, delta, nil); e.Closed == nil {
			t.Fatalf("round %d: %+v", r, e)
		}
		plain := make([]uint32, len(want))
		for _, id := range o.Selected {
			if !slices.Equal(peers[id].idx, want) {
				t.Fatalf("round %d: client %d rebuilt another support", r, id)
			}
			for j, v := range peers[id].codes {
				plain[j] += v
			}
		}
		if !slices.Equal(gotSum, plain) {
			t.Fatalf("round %d: the recovered sum is not the clients' plain sum", r)
		}
		mean := saMean(task.Fixed, plain, len(o.Selected))
		after, _ := h.f.Model()
		checkMoved(t, r, before, after, want, mean)
		ref.Observe(r, want, mean)
	}
	if differs == 0 {
		t.Fatal("every announced support was the one an estimate without observations gives")
	}
	if !slices.Equal(h.f.ann.imp.State().Rate, ref.State().Rate) || !slices.Equal(h.f.ann.imp.State().Last, ref.State().Last) {
		t.Fatal("the FSM's estimate differs from one that observed the published means")
	}
}

// TestSecAggAnnouncedOtherSupport is a coordinator that announces one
// client another support than the others (one announced block swapped for
// one off the support), to learn that client's values where the others
// send nothing. The client binds the session to the support it rebuilt,
// so it derives other keys than its neighbours: no sum is recovered, the
// round is abandoned and the model does not move.
func TestSecAggAnnouncedOtherSupport(t *testing.T) {
	const n = 6
	t0 := time.Unix(1000, 0).UTC()
	run := saAnnouncedRun(n)
	h, o := newSAHarnessRun(t, run, n, t0)
	recovered := false
	h.f.saSum = func(int, []uint64, []uint32) { recovered = true }
	d := h.f.Params()
	nb := secagg.NumBlocks(d, 4)
	victim := o.Selected[2]
	tamper := func(id round.ClientID, task *SecAggTask) {
		if id != victim || task.Announced.Msg == nil {
			return
		}
		a := task.Announced
		top, err := secagg.ReadAnnounced(nil, a.Msg, nb, nb)
		if err != nil {
			t.Fatal(err)
		}
		taken, err := secagg.MergeSupport(nil, top, secagg.RandomBlocks(nb, a.Explore, task.SupportSeed))
		if err != nil {
			t.Fatal(err)
		}
		for b := int32(0); int(b) < nb; b++ {
			if !slices.Contains(taken, b) {
				top[0] = b
				break
			}
		}
		slices.Sort(top)
		task.Announced.Msg = secagg.AppendAnnounced(nil, top, nb)
	}
	peers := map[round.ClientID]*saPeer{}
	for _, id := range o.Selected {
		peers[id] = &saPeer{id: id}
	}
	before := h.f.ModelHash()
	e := saPlay(t, h, o, t0, peers, func(round.ClientID) []float32 { return make([]float32, d) }, tamper)
	if slices.Equal(peers[victim].idx, peers[o.Selected[0]].idx) {
		t.Fatal("the victim rebuilt the others' support: the lie did not reach it")
	}
	if recovered || e.Closed != nil || e.Abandoned == "" || h.f.ModelHash() != before {
		t.Fatalf("a round where one client was announced another support: sum recovered %v, %+v", recovered, e)
	}
	t.Logf("abandoned at step %d: %s", e.Step, e.Abandoned)
}

// TestSecAggAnnouncedClusterFailover runs three rounds with an announced
// support on a 3-node cluster (Raft on bolt logs over peer TLS on
// 127.0.0.1) with five clients that train on synthetic shards. The leader
// is killed in round 2 right after the first client's advert, and again
// as soon as round 2 has closed (between rounds), and each is restarted
// after the next round. Every round's announcement, served by whichever
// node leads, is the one an Importance gives that observed the rounds
// before (a client that asks the new leader again gets the same task);
// each round moves the model by exactly the survivors' decoded mean on
// the announced coordinates; and every replica ends with the same model
// and the same estimate.
func TestSecAggAnnouncedClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("disk cluster in -short mode")
	}
	const rounds = 3
	c := newSACluster(t, rounds, &runspec.SecAgg{Fraction: 0.2, Bits: 16, Clip: 1, Support: "announced,block=8"}, "")
	run, ds, leader, sims, peers, net := c.run, c.ds, c.leader, c.sims, c.peers, c.net
	d := net.NumParams()
	blocks, explore := secagg.AnnouncedBlocks(d, int(math.Round(run.SecAgg.Fraction*float64(d))), 8, runspec.DefaultSecAggExplore)
	ref := secagg.NewImportance(d)
	killed := -1
	for r := 1; r <= rounds; r++ {
		v := saWaitOpen(t, leader, sims, r)
		want, top, _ := ref.Announce(round.TaskSeed(run.TaskSeed^saltSupport, r, 0), 8, blocks, explore)
		msg := secagg.AppendAnnounced(nil, top, secagg.NumBlocks(d, 8))
		before, _ := leader().FSM().Model()
		var fixed secagg.FixedPoint
		for step := SecAggAdvertise; step <= SecAggUnmask; step++ {
			for i, id := range v.Selected {
				task := saStepTask(t, leader, id, r, step)
				p := peers[id]
				if step == SecAggAdvertise {
					if !bytes.Equal(task.Announced.Msg, msg) {
						t.Fatalf("round %d: client %d was announced %x, the estimate announces %x", r, id, task.Announced.Msg, msg)
					}
					p.start(t, task, saTrain(t, sims[id], net, run, r, before))
					if !slices.Equal(p.idx, want) {
						t.Fatalf("round %d: client %d rebuilt another support", r, id)
					}
					fixed = task.Fixed
				}
				answer := p.answer(t, task)
				retryLeader(t, "a step message", leader, func(l *Node) error { return l.SecAggSend(id, r, step, answer) })
				if r == 2 && i == 0 && step == SecAggAdvertise {
					killed = killDiskLeader(t, ds)
					var again SecAggTask
					retryLeader(t, "a task from the new leader", leader, func(l *Node) error {
						var err error
						again, err = l.SecAggTask(id, r)
						return err
					})
					if !bytes.Equal(again.Announced.Msg, task.Announced.Msg) || fmt.Sprint(again.Params) != fmt.Sprint(task.Params) {
						t.Fatalf("after the failover the new leader announces %x under %+v, the old one %x under %+v",
							again.Announced.Msg, again.Params, task.Announced.Msg, task.Params)
					}
					retryLeader(t, "a resend after the failover", leader, func(l *Node) error { return l.SecAggSend(id, r, step, answer) })
				}
			}
		}
		waitFor(t, fmt.Sprintf("round %d to close", r), func() bool { return leader().FSM().View().Version == uint64(r) })
		after, _ := leader().FSM().Model()
		if r == 2 {
			// Restart the node killed mid-round, and kill the leader
			// between rounds: the next one announces round 3.
			ds[killed].open(t, nil, false, fastRaft)
			killed = killDiskLeader(t, ds)
		}
		if r == 3 {
			ds[killed].open(t, nil, false, fastRaft)
		}
		sum := make([]uint32, len(want))
		for _, id := range v.Selected {
			for j, c := range peers[id].codes {
				sum[j] += c
			}
		}
		mean := saMean(fixed, sum, len(v.Selected))
		checkMoved(t, r, before, after, want, mean)
		ref.Observe(r, want, mean)
	}
	waitFor(t, "every replica at the last version with one model and one estimate", func() bool {
		l := leader()
		for _, n := range liveNodes(ds) {
			if len(liveNodes(ds)) != 3 || n.FSM().View().Version != rounds || n.FSM().ModelHash() != l.FSM().ModelHash() {
				return false
			}
		}
		return true
	})
	for _, n := range liveNodes(ds) {
		n.FSM().mu.RLock()
		st := n.FSM().ann.imp.State()
		n.FSM().mu.RUnlock()
		if !slices.Equal(st.Rate, ref.State().Rate) || !slices.Equal(st.Last, ref.State().Last) {
			t.Fatal("a replica's estimate differs from one that observed the published means")
		}
	}
}

// TestSecAggAnnouncedTooLarge: a run whose model has more parameters than
// a client can rebuild an announced support of (secagg.MaxDim) is refused
// before it is committed, rather than in every client's first task.
func TestSecAggAnnouncedTooLarge(t *testing.T) {
	run := saAnnouncedRun(5)
	run.Model, run.InputDim = "mlp:8192", 8192 // 8192² weights and more
	if err := run.Validate(); err == nil || !strings.Contains(err.Error(), "announced support") {
		t.Fatalf("an announced support of a model beyond secagg.MaxDim: %v", err)
	}
	run.SecAgg.Support = ""
	if err := run.Validate(); err != nil {
		t.Fatalf("the same run with a random support: %v", err)
	}
}

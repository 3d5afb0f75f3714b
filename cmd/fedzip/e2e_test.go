package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
)

// proc is a fedzip process whose JSON log lines are collected.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs []map[string]any
	done chan struct{}
}

func start(t *testing.T, bin, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"msg": "raw", "line": sc.Text()}
			}
			p.mu.Lock()
			p.logs = append(p.logs, m)
			p.mu.Unlock()
		}
		p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.kill()
		// A failure shows every process's log, clients included, not
		// only the one the failing wait watched.
		if t.Failed() {
			t.Logf("%s log:\n%s", p.name, p.dump())
		}
	})
	return p
}

// signal sends sig to p; a SIGSTOP returns once p is stopped.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	if sig != syscall.SIGSTOP {
		return
	}
	// Delivery is asynchronous: wait until the kernel reports the
	// process stopped ("T" in /proc/pid/stat, after the command name).
	stat := fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid)
	waitLog(t, p, "the process to stop", time.Minute, func() bool {
		b, err := os.ReadFile(stat)
		if err != nil {
			return false
		}
		i := strings.LastIndexByte(string(b), ')')
		return i > 0 && strings.HasPrefix(string(b[i:]), ") T")
	})
}

// holdUnsent stops n of the clients that have sent no update of round r
// (their state file, read once they are stopped, names neither a pending
// update of round r or later nor such a round done: a client saves its
// pending update before it sends it) and resumes the others. It returns
// the held clients, for the caller to resume with SIGCONT.
func holdUnsent(t *testing.T, clients []*proc, dir string, r uint64, n int) []*proc {
	t.Helper()
	for _, c := range clients {
		c.signal(t, syscall.SIGSTOP)
	}
	var held []*proc
	for i, c := range clients {
		var st struct {
			LastRound uint64 `json:"last_round"`
			Pending   *struct {
				Round uint64 `json:"round"`
			} `json:"pending"`
		}
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("state%d", i), "state.json"))
		switch {
		case errors.Is(err, os.ErrNotExist):
			// Not registered yet (a slow start: round 1 closes with
			// --min-clients): it has sent nothing either.
		case err != nil || json.Unmarshal(b, &st) != nil:
			t.Fatalf("%s: state file: %v\n%s", c.name, err, b)
		}
		if len(held) < n && st.LastRound < r && (st.Pending == nil || st.Pending.Round < r) {
			held = append(held, c)
			continue
		}
		c.signal(t, syscall.SIGCONT)
	}
	if len(held) < n {
		t.Fatalf("only %d clients had sent no update of round %d when it opened: a client downloads and trains before it sends", len(held), r)
	}
	return held
}

func (p *proc) kill() {
	if p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// find returns the first log line with msg whose attributes match.
func (p *proc) find(msg string, attrs map[string]float64) map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.logs {
		if l["msg"] != msg {
			continue
		}
		ok := true
		for k, v := range attrs {
			if f, _ := l[k].(float64); f != v {
				ok = false
			}
		}
		if ok {
			return l
		}
	}
	return nil
}

func (p *proc) dump() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, l := range p.logs {
		j, _ := json.Marshal(l)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

func waitLog(t *testing.T, p *proc, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (watching %s; every process's log follows)", what, p.name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// buildWithCerts builds fedzip and development certificates into a
// temporary directory for the multi-process tests.
func buildWithCerts(t *testing.T) (dir, bin, certs string) {
	t.Helper()
	dir = t.TempDir()
	bin = filepath.Join(dir, "fedzip")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	certs = filepath.Join(dir, "certs")
	if out, err := exec.Command(bin, "dev-certs", certs).CombinedOutput(); err != nil {
		t.Fatalf("dev-certs: %v\n%s", err, out)
	}
	return dir, bin, certs
}

func freePort(t *testing.T) string {
	t.Helper()
	return pickPort(t, 26000, 32000)
}

// pickPort returns a 127.0.0.1 address whose port, in [lo, hi), is free
// for TCP and UDP now and was not handed out before in this process. The
// range lies below Linux's ephemeral ports (32768–60999), which every
// ":0" listener (of this and of parallel test binaries) draws from: a
// port picked here, closed, then passed to a process that binds it later
// cannot be taken meanwhile by an ephemeral bind (a ":0" pick could, and
// once did: "bind: address already in use" in TestCoordinatorMetricsAndDashboard).
// The coordinator package's tests pick from another range.
func pickPort(t testing.TB, lo, hi int) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		p := lo + rand.IntN(hi-lo)
		if portsUsed[p] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		portsUsed[p] = true
		return addr
	}
	t.Fatalf("no free port in [%d, %d)", lo, hi)
	return ""
}

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)

// TestEndToEnd runs a coordinator and 5 client processes on 127.0.0.1 over
// mTLS for 3 rounds of MNIST with top-k 1%, 8-bit, error-feedback updates
// and top-k 10%, 8-bit model downloads: clients keep the model they hold
// and download the compressed change since its version, so that round 3's
// downloads must be several times smaller than dense ones. It kill -9s the coordinator after it has
// acknowledged an update of round 2 and restarts it: round 2 must still
// close with all 5 updates, because an acknowledged client does not send
// again. Then it kills a client in round 3: the round closes at its
// deadline with the 4 others. The final model must exceed 90% accuracy.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process end-to-end test in -short mode")
	}
	// wait bounds each step, for a starved machine (2 busy cores, -race).
	const wait = 2 * time.Minute
	dir, bin, certs := buildWithCerts(t)
	key := filepath.Join(dir, "key.pem")
	if out, err := exec.Command(bin, "compress", "--gen-key", key).CombinedOutput(); err != nil {
		t.Fatalf("gen-key: %v\n%s", err, out)
	}
	grpcAddr, raftAddr, httpAddr, metricsAddr := freePort(t), freePort(t), freePort(t), freePort(t)
	coordArgs := []string{"coordinator", "--deliver-key", key, "--deliver-recipe", "prune=0.8;cluster=bits:5;encode=huffman", "--http-addr", httpAddr, "--log-format", "json", "--listen", grpcAddr, "--raft-addr", raftAddr,
		"--state-dir", filepath.Join(dir, "coord"), "--rounds", "3", "--clients-per-round", "5", "--min-clients", "4",
		"--deadline", "6s", "--eval", "mnist", "--join-secret", "e2e", "--upload-codec", "topk=0.01,bits=8,ef=on", "--download-codec", "topk=0.1,bits=8", "--strategy", "fedavg", "--metrics-addr", metricsAddr, "--save-model", filepath.Join(dir, "model.fzm"),
		"--tls-cert", filepath.Join(certs, "server.pem"), "--tls-key", filepath.Join(certs, "server-key.pem"),
		"--client-ca", filepath.Join(certs, "ca.pem"), "--raft-cert", filepath.Join(certs, "node.pem"), "--raft-key", filepath.Join(certs, "node-key.pem"),
		"--raft-ca", filepath.Join(certs, "peer-ca.pem")}
	coord := start(t, bin, "coordinator", coordArgs...)
	clients := make([]*proc, 5)
	for i := range clients {
		clients[i] = start(t, bin, fmt.Sprintf("client%d", i), "client", "--log-format", "json", "--coordinator", grpcAddr,
			"--ca", filepath.Join(certs, "ca.pem"), "--cert", filepath.Join(certs, "client.pem"), "--key", filepath.Join(certs, "client-key.pem"),
			"--clients", "5", "--client-index", fmt.Sprint(i), "--join-secret", "e2e", "--state-dir", filepath.Join(dir, fmt.Sprintf("state%d", i)),
			"--timeout", "3m")
	}
	waitLog(t, coord, "round 1 to close", wait, func() bool { return coord.find("round closed", map[string]float64{"round": 1, "version": 1}) != nil })

	// Kill the coordinator once it has acknowledged an update of round 2,
	// while round 2 is still open. The clients train round 2 together, so
	// the first acknowledgement is soon followed by the others: on a
	// loaded machine round 2 once closed, round 3 opened and three clients
	// downloaded version 2 before the kill landed; after the restart they
	// held version 2 and round 3's downloads were empty deltas ("3
	// downloads of 0 bytes"), the real ones counted by the killed process.
	// So two clients that have not sent a round-2 update are held
	// (stopped) until the coordinator is down: with at most 3 of the 4
	// --min-clients updates round 2 cannot close (at its deadline it is
	// aborted and opened again, as round 2 of version 1).
	waitLog(t, coord, "round 2 to open", wait, func() bool { return coord.find("round opened", map[string]float64{"round": 2}) != nil })
	held := holdUnsent(t, clients, dir, 2, 2)
	var acked *proc
	waitLog(t, coord, "an acknowledged round-2 update", wait, func() bool {
		for _, c := range clients {
			if !slices.Contains(held, c) && c.find("update accepted", map[string]float64{"round": 2}) != nil {
				acked = c
				return true
			}
		}
		return false
	})
	coord.kill()
	coord = start(t, bin, "coordinator (restarted)", coordArgs...)
	for _, c := range held {
		c.signal(t, syscall.SIGCONT)
	}
	waitLog(t, coord, "round 2 to close after the restart", wait, func() bool {
		return coord.find("round closed", map[string]float64{"round": 2, "version": 2}) != nil
	})
	// The update acknowledged before the crash must be in the round. The
	// others are resubmitted after the restart, with backoff: one may miss
	// the deadline on a loaded machine, so at least --min-clients count.
	ackedID := acked.find("registered", nil)["id"]
	closed2 := coord.find("round closed", map[string]float64{"round": 2, "version": 2})
	reported, _ := closed2["reported"].(float64)
	lost := ackedID == nil || reported < 4
	if m, ok := closed2["missing_clients"].([]any); ok && slices.Contains(m, ackedID) {
		lost = true
	}
	t.Logf("round 2 after the restart: %v updates, missing %v; acknowledged before the crash: client %v", reported, closed2["missing_clients"], ackedID)
	if lost {
		var logs strings.Builder
		for _, c := range clients {
			fmt.Fprintf(&logs, "--- %s\n%s", c.name, c.dump())
		}
		t.Fatalf("round 2 closed with %v updates, missing %v: the update acknowledged to %s (client %v) before the crash was lost\n%s\n%s", reported, closed2["missing_clients"], acked.name, ackedID, coord.dump(), logs.String())
	}

	// Kill one client as soon as round 3 opens: the round must close at its
	// deadline with the other four.
	waitLog(t, coord, "round 3 to open", wait, func() bool { return coord.find("round opened", map[string]float64{"round": 3}) != nil })
	clients[4].kill()
	waitLog(t, coord, "training to finish", wait, func() bool { return coord.find("training finished", nil) != nil })
	l := coord.find("round closed", map[string]float64{"round": 3, "version": 3})
	if l == nil {
		t.Fatalf("no evaluation of round 3\n%s", coord.dump())
	}
	if acc, _ := l["test_accuracy"].(float64); acc < 0.90 {
		t.Fatalf("test accuracy after 3 rounds %.4f, want > 0.90", acc)
	}
	// Round 3's clients held version 1 and downloaded the delta to 2 (in
	// rounds 1 and 2 they held nothing or version 0, which a request
	// cannot name, and downloaded whole models).
	arch, _ := nn.ParseArch("2nn", dataset.MNISTDim, dataset.MNISTClasses)
	downloads, _ := l["downloads"].(float64)
	bytes, _ := l["download_bytes"].(float64)
	dense := downloads * 4 * float64(arch.NumParams())
	t.Logf("round 3: %v downloads, %v bytes, dense %v (%.1fx smaller); client model accuracy %v", downloads, bytes, dense, dense/bytes, l["client_test_accuracy"])
	if downloads < 4 || bytes <= 0 || bytes > dense/4 {
		t.Fatalf("round 3: %v downloads of %v bytes in all, dense %v: want at least 4 downloads, 4x smaller than dense\n%s", downloads, bytes, dense, coord.dump())
	}
	if r2 := coord.find("round closed", map[string]float64{"round": 2, "version": 2}); r2 == nil || r2["client_test_accuracy"] == nil {
		t.Fatalf("the round log has no client model accuracy: %v", r2)
	}
	for _, c := range clients[:4] {
		waitLog(t, c, "the client to exit", wait, func() bool {
			select {
			case <-c.done:
				return true
			default:
				return false
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "model.fzm")); err != nil {
		t.Fatal(err)
	}
	// The coordinator delivers the final model, signed with its key, and
	// serves it; a device fetches and verifies it.
	waitLog(t, coord, "the model to be delivered", wait, func() bool { return coord.find("model delivered", nil) != nil })
	url := "https://" + httpAddr + "/v1/model"
	out, err := exec.Command(bin, "fetch-model", "--url", url, "--ca", filepath.Join(certs, "ca.pem"),
		"--pubkey", filepath.Join(dir, "key.pub.pem"), "--out", filepath.Join(dir, "device.fzm")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "signature verified") {
		t.Fatalf("fetch-model: %v\n%s", err, out)
	}
	other := filepath.Join(dir, "other.pem")
	exec.Command(bin, "compress", "--gen-key", other).Run()
	out, err = exec.Command(bin, "fetch-model", "--url", url, "--ca", filepath.Join(certs, "ca.pem"),
		"--pubkey", filepath.Join(dir, "other.pub.pem"), "--out", filepath.Join(dir, "bad.fzm")).CombinedOutput()
	if err == nil {
		t.Fatalf("fetch-model accepted a file signed by another key:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.fzm")); err == nil {
		t.Fatal("an unverified model was written")
	}
}

package localcluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

type role int

const (
	nodeRole role = iota
	clientRole
)

// child is one child process. Its fields belong to the supervisor's
// goroutine, except cmd, which its reader goroutine waits on.
type child struct {
	name    string
	role    role
	args    []string
	env     []string
	ports   nodePorts // nodes only
	logPath string

	cmd      *exec.Cmd
	pid      int
	started  bool
	running  bool
	killed   bool // SIGKILLed after the grace period
	restarts int  // times Config.Restart started it again

	listening, joined bool
}

// event is a log line of interest from a child, or its exit (the last
// event of a child).
type event struct {
	c    *child
	line map[string]any
	exit bool
	err  error
}

// supervisor starts the children and reacts to their events, all from
// the goroutine that calls run.
type supervisor struct {
	cfg            Config
	w              *work
	out            io.Writer
	nodes, clients []*child
	all            []*child // in start order
	history        []Proc   // every process started, restarts too
	sp             *spawner
	events         chan event
	wg             sync.WaitGroup // reader and status goroutines

	status       chan string // output of `fedzip cluster status`
	statusBusy   bool
	statusCtx    context.Context
	statusCancel context.CancelFunc
	statusOnLead bool // show the status when a new leader opens a round
	hinted       bool // said how to kill a node

	running       int
	othersStarted bool
	up            bool // every node listening and joined, clients started
	stopping      bool
	result        error
	grace         <-chan time.Time
	clientsDone   int
	lastRound     int
	leader        *child
}

func newSupervisor(cfg Config, w *work, ports []nodePorts) *supervisor {
	s := &supervisor{cfg: cfg, w: w, out: cfg.Out, events: make(chan event, 64), status: make(chan string, 1)}
	base := baseEnv()
	var grpc, gossip []string
	for _, p := range ports {
		grpc, gossip = append(grpc, p.grpc), append(gossip, p.gossip)
	}
	for i, p := range ports {
		name := fmt.Sprintf("n%d", i+1)
		args := []string{"coordinator", "--id", name, "--log-format", "json",
			"--listen", p.grpc, "--raft-addr", p.raft, "--gossip-addr", p.gossip, "--ui-addr", p.ui,
			"--state-dir", w.stateDir(name), "--save-model", w.nodeModel(name),
			"--tls-cert", w.certs.ServerCert, "--tls-key", w.certs.ServerKey, "--client-ca", w.certs.CA,
			"--raft-cert", w.certs.NodeCert, "--raft-key", w.certs.NodeKey, "--raft-ca", w.certs.PeerCA,
			"--dataset", cfg.Dataset, "--rounds", fmt.Sprint(cfg.Rounds), "--fraction", fmt.Sprint(cfg.Fraction),
			"--min-clients", fmt.Sprint(cfg.MinClients), "--deadline", cfg.Deadline.String(), "--upload-codec", cfg.UploadCodec}
		if cfg.DownloadCodec != "" {
			args = append(args, "--download-codec", cfg.DownloadCodec)
		}
		if cfg.Strategy != "" {
			args = append(args, "--strategy", cfg.Strategy)
		}
		if cfg.Dataset == "mnist" {
			args = append(args, "--eval", "mnist")
		}
		if cfg.Model != "" {
			args = append(args, "--model", cfg.Model)
		}
		if cfg.FedEvalEvery > 0 {
			args = append(args, "--fed-eval-every", fmt.Sprint(cfg.FedEvalEvery))
		}
		if i > 0 {
			// Node 1 bootstraps; the others join it.
			args = append(args, "--join", ports[0].grpc, "--gossip-join", ports[0].gossip)
		}
		env := append(append([]string(nil), base...), "FEDZIP_JOIN_SECRET="+w.secrets.join, "FEDZIP_CLUSTER_SECRET="+w.secrets.cluster,
			"FEDZIP_GOSSIP_KEY="+w.secrets.gossipKey, "FEDZIP_UI_TOKEN="+w.secrets.uiToken)
		s.nodes = append(s.nodes, &child{name: name, role: nodeRole, args: args, env: env, ports: p, logPath: w.logFile(name)})
	}
	for i := range cfg.Clients {
		name := fmt.Sprintf("client%d", i)
		args := []string{"client", "--name", name, "--log-format", "json", "--coordinator", strings.Join(grpc, ","),
			"--ca", w.certs.CA, "--cert", w.certs.ClientCert, "--key", w.certs.ClientKey,
			"--dataset", cfg.Dataset, "--clients", fmt.Sprint(cfg.Clients), "--client-index", fmt.Sprint(i),
			"--state-dir", w.stateDir(name), "--gossip-addr", "127.0.0.1:0", "--gossip-join", strings.Join(gossip, ",")}
		if cfg.HoldOut > 0 {
			args = append(args, "--holdout", fmt.Sprint(cfg.HoldOut))
		}
		env := append(append([]string(nil), base...), "FEDZIP_JOIN_SECRET="+w.secrets.join, "FEDZIP_GOSSIP_KEY="+w.secrets.gossipKey)
		s.clients = append(s.clients, &child{name: name, role: clientRole, args: args, env: env, logPath: w.logFile(name)})
	}
	return s
}

// baseEnv is this process's environment without FEDZIP_ variables: the
// children's flags come from Run alone (a variable would override them).
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FEDZIP_") {
			env = append(env, kv)
		}
	}
	return env
}

func (s *supervisor) printf(format string, args ...any) { fmt.Fprintf(s.out, format, args...) }

// run starts the cluster and supervises it until every child has exited.
func (s *supervisor) run(ctx context.Context) error {
	s.statusCtx, s.statusCancel = context.WithCancel(context.Background())
	s.sp = startSpawner()
	defer s.sp.close()
	defer s.cleanup()
	s.header()
	if err := s.start(s.nodes[0]); err != nil {
		return err
	}
	s.printNode(s.nodes[0])
	startup := time.NewTimer(s.cfg.StartTimeout)
	defer startup.Stop()
	done := ctx.Done()
	for s.running > 0 {
		select {
		case <-done:
			done = nil
			if !s.stopping {
				s.printf("interrupted: stopping %d processes\n", s.running)
			}
			s.stop(ctx.Err())
		case ev := <-s.events:
			s.handle(ev)
		case out := <-s.status:
			s.statusBusy = false
			s.printf("%s", indent(out))
			if !s.hinted {
				s.hinted = true
				s.printf("kill a node to watch the others go on, even the leader: kill -9 PID (from the table); Ctrl-C stops everything\n")
			}
		case <-startup.C:
			if !s.up {
				s.stop(fmt.Errorf("%w: the cluster did not come up within %v; the logs are in %s", ErrFailed, s.cfg.StartTimeout, s.w.logs))
			}
		case <-s.grace:
			s.grace = nil
			for _, c := range s.all {
				if c.running {
					c.killed = true
					c.cmd.Process.Kill()
				}
			}
		}
	}
	for _, c := range s.all {
		if c.killed {
			s.printf("%s | did not stop within %v: killed\n", c.name, s.cfg.Grace)
		}
	}
	s.footer()
	return s.result
}

// cleanup kills every child still running (on an early return) and waits
// for every goroutine of the run.
func (s *supervisor) cleanup() {
	for _, c := range s.all {
		if c.running {
			c.cmd.Process.Kill()
		}
	}
	for s.running > 0 {
		if ev := <-s.events; ev.exit {
			ev.c.running = false
			s.running--
		}
	}
	s.statusCancel()
	s.wg.Wait()
}

// start starts c, its output going to its log file and, for the lines
// of interest, to the supervisor as events.
func (s *supervisor) start(c *child) error {
	logf, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("localcluster: %w", err)
	}
	r, pw, err := os.Pipe()
	if err != nil {
		logf.Close()
		return fmt.Errorf("localcluster: %w", err)
	}
	cmd := exec.Command(s.cfg.Exe, c.args...)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = c.env, s.w.dir, pw, pw
	cmd.SysProcAttr = sysProcAttr()
	err = s.sp.start(cmd)
	pw.Close()
	if err != nil {
		r.Close()
		logf.Close()
		return fmt.Errorf("localcluster: starting %s: %w", c.name, err)
	}
	if !c.started {
		s.all = append(s.all, c)
	}
	c.cmd, c.pid, c.started, c.running = cmd, cmd.Process.Pid, true, true
	s.history = append(s.history, Proc{Name: c.name, PID: c.pid, Log: c.logPath})
	s.running++
	s.wg.Add(1)
	go s.read(c, cmd, r, logf)
	return nil
}

// read copies c's output to its log file, sends the lines of interest as
// events, then waits for c and sends its exit.
func (s *supervisor) read(c *child, cmd *exec.Cmd, r *os.File, logf *os.File) {
	defer s.wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		b := sc.Bytes()
		logf.Write(b)
		logf.Write([]byte{'\n'})
		if m := ofInterest(b); m != nil {
			s.events <- event{c: c, line: m}
		}
	}
	io.Copy(logf, r) // what follows a line too long to scan
	r.Close()
	err := cmd.Wait()
	logf.Close()
	s.events <- event{c: c, exit: true, err: err}
}

// Log messages the supervisor acts on or shows.
const (
	msgListening = "coordinator listening"
	msgJoined    = "joined the cluster"
	msgOpened    = "round opened"
	msgClosed    = "round closed"
	msgRaw       = "raw" // a line that is not JSON
)

// ofInterest parses a log line the supervisor acts on or shows: the
// messages above, errors, and the commands' own error lines, which are
// not JSON ("fedzip coordinator: ...").
func ofInterest(b []byte) map[string]any {
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		if s := string(b); strings.HasPrefix(s, "fedzip ") || strings.HasPrefix(s, "panic:") {
			return map[string]any{"msg": msgRaw, "line": s}
		}
		return nil
	}
	switch msg, _ := m["msg"].(string); {
	case msg == msgListening, msg == msgJoined, msg == msgOpened, msg == msgClosed,
		strings.HasPrefix(msg, "round aborted"), m["level"] == "ERROR":
		return m
	}
	return nil
}

func (s *supervisor) handle(ev event) {
	c := ev.c
	if ev.exit {
		s.exited(c, ev.err)
		return
	}
	if s.stopping {
		// What children say while they stop (a client that can no longer
		// reach the nodes) is in their logs.
		return
	}
	l := ev.line
	msg, _ := l["msg"].(string)
	switch {
	case msg == msgListening:
		c.listening = true
		s.advance()
	case msg == msgJoined:
		c.joined = true
		s.advance()
	case msg == msgOpened:
		if s.leader != c {
			s.leader = c
			s.printf("%s | leads: opened round %v\n", c.name, l["round"])
		}
		if s.statusOnLead {
			// The first round after a node died: how the cluster looks now.
			s.statusOnLead = false
			s.showStatus()
		}
	case msg == msgClosed:
		s.roundClosed(c, l)
	case msg == msgRaw:
		s.printf("%s | %s\n", c.name, l["line"])
	default:
		line := fmt.Sprintf("%s | %s", c.name, msg)
		if e, ok := l["err"]; ok {
			line += fmt.Sprintf(": %v", e)
		}
		s.printf("%s\n", line)
	}
}

// advance starts the other nodes once node 1 listens, and the clients
// once every node listens and has joined.
func (s *supervisor) advance() {
	if s.stopping {
		return
	}
	if s.nodes[0].listening && !s.othersStarted {
		s.othersStarted = true
		for _, c := range s.nodes[1:] {
			if err := s.start(c); err != nil {
				s.stop(fmt.Errorf("%w: %w", ErrFailed, err))
				return
			}
			s.printNode(c)
		}
	}
	if s.up {
		return
	}
	for i, c := range s.nodes {
		if !c.listening || (i > 0 && !c.joined) {
			return
		}
	}
	s.up = true
	var pids []string
	for _, c := range s.clients {
		if err := s.start(c); err != nil {
			s.stop(fmt.Errorf("%w: %w", ErrFailed, err))
			return
		}
		pids = append(pids, fmt.Sprint(c.pid))
	}
	s.printf("%s..%s | started, pids %s\n", s.clients[0].name, s.clients[len(s.clients)-1].name, strings.Join(pids, " "))
	s.printf("the cluster is up; its status, now and any time:\n  %s\n", strings.Join(quoteArgs(append([]string{s.cfg.Exe}, s.statusArgs()...)), " "))
	s.showStatus()
}

func (s *supervisor) statusArgs() []string {
	var grpc []string
	for _, c := range s.nodes {
		grpc = append(grpc, c.ports.grpc)
	}
	return []string{"cluster", "status", "--coordinator", strings.Join(grpc, ","),
		"--ca", s.w.certs.CA, "--cert", s.w.certs.ClientCert, "--key", s.w.certs.ClientKey}
}

// showStatus runs `fedzip cluster status` in the background; its output
// comes back on s.status.
func (s *supervisor) showStatus() {
	if s.statusBusy || s.stopping {
		return
	}
	ctx, cancel := context.WithTimeout(s.statusCtx, 30*time.Second)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, s.cfg.Exe, s.statusArgs()...)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = baseEnv(), s.w.dir, &out, &out
	cmd.SysProcAttr = sysProcAttr()
	if err := s.sp.start(cmd); err != nil {
		cancel()
		s.printf("cluster status: %v\n", err)
		return
	}
	s.statusBusy = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		cmd.Wait()
		s.status <- out.String()
	}()
}

func (s *supervisor) roundClosed(c *child, l map[string]any) {
	r, _ := l["round"].(float64)
	acc, hasAcc := l["test_accuracy"].(float64)
	if int(r) <= s.lastRound || (s.cfg.Dataset == "mnist" && !hasAcc) {
		// Every node logs every round: show it once, with its accuracy.
		return
	}
	s.lastRound = int(r)
	line := fmt.Sprintf("%s | round %d closed: %v updates", c.name, int(r), l["reported"])
	if m, _ := l["missing"].(float64); m > 0 {
		line += fmt.Sprintf(", %v missing", m)
	}
	if hasAcc {
		line += fmt.Sprintf(", test accuracy %.2f%%", 100*acc)
	}
	if total, ok := l["total_bytes"].(float64); ok && total > 0 {
		// What the node that logged it served and received.
		line += fmt.Sprintf(", %.2f MB up and down via %s", total/1e6, c.name)
		if ratio, _ := l["total_ratio"].(float64); ratio > 0 {
			line += fmt.Sprintf(" (%.2f× smaller than dense FedAvg)", ratio)
		}
	}
	s.printf("%s\n", line)
}

// exited reacts to c's exit.
func (s *supervisor) exited(c *child, err error) {
	c.running = false
	s.running--
	if s.stopping {
		return
	}
	if c.role == clientRole {
		if err == nil {
			s.clientsDone++
			return
		}
		s.printf("%s | exited (%s); its log: %s\n", c.name, describe(err), c.logPath)
		for _, o := range s.clients {
			if o.running {
				return
			}
		}
		if s.clientsDone == 0 {
			s.stop(fmt.Errorf("%w: every client has exited; their logs are in %s", ErrFailed, s.w.logs))
		}
		return
	}
	if err == nil {
		// A node exits 0 after the last round (or when told to stop).
		if ferr := finalModel(s.w.nodeModel(c.name), s.w.model(), s.cfg.Rounds); ferr == nil {
			s.printf("%s | training finished after %d rounds; stopping the other processes\n", c.name, s.cfg.Rounds)
			s.stop(nil)
			return
		} else {
			s.printf("%s | exited before training finished (%v); its log: %s\n", c.name, ferr, c.logPath)
		}
	} else {
		s.printf("%s | exited (%s); its log: %s\n", c.name, describe(err), c.logPath)
	}
	if !s.up {
		s.printf("%s", indent(tail(c.logPath, 5)))
		s.stop(fmt.Errorf("%w: %s exited while the cluster was starting (%s); its log: %s", ErrFailed, c.name, describe(err), c.logPath))
		return
	}
	if c == s.leader {
		s.leader = nil
	}
	s.statusOnLead = true
	if s.cfg.Restart && c.restarts < maxRestarts {
		c.restarts++
		s.printf("%s | restarting it on its state (%d of %d)\n", c.name, c.restarts, maxRestarts)
		if err := s.restart(c); err != nil {
			s.stop(fmt.Errorf("%w: %w", ErrFailed, err))
			return
		}
		s.printNode(c)
		return
	}
	alive := 0
	for _, n := range s.nodes {
		if n.running {
			alive++
		}
	}
	quorum := s.cfg.Nodes/2 + 1
	if alive < quorum {
		s.stop(fmt.Errorf("%w: %d of %d coordinators are left, fewer than a quorum (%d): training cannot go on", ErrFailed, alive, s.cfg.Nodes, quorum))
		return
	}
	s.printf("%d of %d coordinators are left, a quorum: training goes on, and the clients fail over\n", alive, s.cfg.Nodes)
}

// maxRestarts bounds how often Config.Restart starts one node again, so
// that a node that cannot run is not restarted forever.
const maxRestarts = 3

// restart starts a dead node again on its state directory. It is a
// voter already (its Raft state says so): it asks nobody to add it and
// never bootstraps; it gossips with the nodes that run.
func (s *supervisor) restart(c *child) error {
	var args, gossip []string
	for i := 0; i < len(c.args); i++ {
		if a := c.args[i]; a == "--join" || a == "--gossip-join" {
			i++ // and its value
			continue
		}
		args = append(args, c.args[i])
	}
	for _, n := range s.nodes {
		if n != c && n.running {
			gossip = append(gossip, n.ports.gossip)
		}
	}
	args = append(args, "--bootstrap=false")
	if len(gossip) > 0 {
		args = append(args, "--gossip-join", strings.Join(gossip, ","))
	}
	c.args, c.listening = args, false
	return s.start(c)
}

// stop asks every running child to stop; result is what run returns. The
// grace period starts now.
func (s *supervisor) stop(result error) {
	if s.stopping {
		return
	}
	s.stopping, s.result = true, result
	for _, c := range s.all {
		if c.running {
			terminate(c.cmd.Process)
		}
	}
	s.grace = time.After(s.cfg.Grace)
}

func (s *supervisor) header() {
	made := func(b bool) string {
		if b {
			return "made now"
		}
		return "reused"
	}
	s.printf("fedzip local: %d coordinators and %d clients, %d rounds of %s (upload codec %s)\n",
		s.cfg.Nodes, s.cfg.Clients, s.cfg.Rounds, s.cfg.Dataset, s.cfg.UploadCodec)
	s.printf("  work folder   %s\n", s.w.dir)
	s.printf("  certificates  %s (%s)\n", s.w.certsDir, made(s.w.newCerts))
	s.printf("  secrets       %s/secrets (join secret, cluster secret, gossip key, dashboard token; mode 0600; %s)\n", s.w.dir, made(s.w.newSecrets))
	s.printf("  logs          %s/NAME.log\n", s.w.logs)
}

func (s *supervisor) printNode(c *child) {
	s.printf("%s | started, pid %d: gRPC %s, Raft %s, gossip %s\n", c.name, c.pid, c.ports.grpc, c.ports.raft, c.ports.gossip)
	s.printf("%s | dashboard http://%s/?token=%s\n", c.name, c.ports.ui, s.w.secrets.uiToken)
}

func (s *supervisor) footer() {
	switch {
	case s.result == nil:
		exe := s.cfg.Exe
		if strings.Contains(exe, string(filepath.Separator)+"go-build") {
			exe = "fedzip" // go run's binary, gone once it exits
		}
		s.printf("model: %s (round %d)\n  inspect it: %s inspect %s\n", s.w.model(), s.cfg.Rounds, exe, s.w.model())
	case errors.Is(s.result, context.Canceled) || errors.Is(s.result, context.DeadlineExceeded):
		s.printf("stopped; the work folder is kept: %s (run again there with --reset)\n", s.w.dir)
	default:
		s.printf("stopped; the logs are in %s\n", s.w.logs)
	}
}

// procs lists the children that ran.
func (s *supervisor) procs() []Proc {
	return s.history
}

// describe says how a child exited: "exit status 1", "signal: killed".
func describe(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n") + "\n"
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

// quoteArgs quotes the arguments a shell would split.
func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~!") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return out
}

package localcluster

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// checkExposure attacks a running cluster from outside, as another local
// user or another machine would: the children's command lines (which
// every local user can read in /proc) hold no secret, while their
// environments do (so the check reads the right processes); and every
// socket they listen on (TCP) or are bound to (UDP) is on 127.0.0.1.
func checkExposure(t *testing.T, work string, pids []int) {
	t.Helper()
	secrets := readSecrets(t, work)
	for _, pid := range pids {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			t.Fatalf("child %d: %v", pid, err)
		}
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatalf("child %d: %v", pid, err)
		}
		for name, s := range secrets {
			if bytes.Contains(cmdline, []byte(s)) {
				t.Errorf("child %d has the %s on its command line: %q", pid, name, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
			}
		}
		if !bytes.Contains(environ, []byte("FEDZIP_JOIN_SECRET="+secrets[joinSecretFile])) {
			t.Errorf("child %d has no join secret in its environment: the check reads the wrong processes", pid)
		}
		for _, a := range boundAddrs(t, pid) {
			if !strings.HasPrefix(a, "127.0.0.1:") {
				t.Errorf("child %d listens on %s, not on 127.0.0.1", pid, a)
			}
		}
	}
}

// checkLogsHoldNoSecret fails if a child's log holds a secret.
func checkLogsHoldNoSecret(t *testing.T, work string) {
	t.Helper()
	secrets := readSecrets(t, work)
	logs, _ := filepath.Glob(filepath.Join(work, "logs", "*.log"))
	if len(logs) == 0 {
		t.Fatal("no logs")
	}
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		for name, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds the %s", l, name)
			}
		}
	}
}

func readSecrets(t *testing.T, work string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range []string{joinSecretFile, clusterSecretFile, gossipKeyFile, uiTokenFile} {
		b, err := os.ReadFile(filepath.Join(work, "secrets", f))
		if err != nil || len(bytes.TrimSpace(b)) < 16 {
			t.Fatalf("secret %s: %v (%d bytes)", f, err, len(b))
		}
		out[f] = string(bytes.TrimSpace(b))
	}
	return out
}

// boundAddrs returns the local addresses of pid's listening TCP sockets
// and bound UDP sockets, from /proc/PID/fd and /proc/PID/net.
func boundAddrs(t *testing.T, pid int) []string {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("child %d: %v", pid, err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, table := range []struct {
		file, state string // the state of a listening or bound socket
	}{{"tcp", "0A"}, {"tcp6", "0A"}, {"udp", "07"}, {"udp6", "07"}} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table.file))
		if err != nil {
			continue // no IPv6
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != table.state || !inodes[fields[9]] {
				continue
			}
			out = append(out, procAddr(fields[1]))
		}
		f.Close()
	}
	if len(out) == 0 {
		t.Errorf("child %d has no listening socket: the check reads the wrong tables", pid)
	}
	return out
}

// procAddr decodes an IPv4 address of /proc/net ("0100007F:1F90" is
// 127.0.0.1:8080); an IPv6 one is returned as it is, which the check
// refuses.
func procAddr(s string) string {
	host, port, _ := strings.Cut(s, ":")
	var p int
	fmt.Sscanf(port, "%X", &p)
	if len(host) != 8 {
		return "[" + host + "]:" + fmt.Sprint(p)
	}
	var b [4]int
	for i := range b {
		fmt.Sscanf(host[2*(3-i):2*(3-i)+2], "%X", &b[i])
	}
	return fmt.Sprintf("%d.%d.%d.%d:%d", b[0], b[1], b[2], b[3], p)
}

// checkDashboards asks every dashboard the output names for its data:
// without the token it is refused, with it (as a bearer token) served.
func checkDashboards(t *testing.T, work, out string) {
	t.Helper()
	token := readSecrets(t, work)[uiTokenFile]
	urls := regexp.MustCompile(`dashboard (http://127\.0\.0\.1:\d+)/\?token=(\S+)`).FindAllStringSubmatch(out, -1)
	if len(urls) == 0 {
		t.Fatalf("no dashboard in the output:\n%s", out)
	}
	c := &http.Client{Timeout: time.Minute}
	for _, u := range urls {
		if u[2] != token {
			t.Errorf("the output's dashboard token is not the secret's")
		}
		for _, tc := range []struct {
			auth string
			want int
		}{{"", http.StatusUnauthorized}, {"Bearer wrong", http.StatusUnauthorized}, {"Bearer " + token, http.StatusOK}} {
			req, _ := http.NewRequest(http.MethodGet, u[1]+"/api/state", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", u[1], err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s/api/state with %q: %d, want %d", u[1], tc.auth, resp.StatusCode, tc.want)
			}
		}
	}
}

// Package dashboard is fedzip's live web page: round progress, accuracy
// and loss per round, total bytes (uploaded + downloaded) and bytes per
// round by direction, the total and upload compression ratios, client participation and, on a coordinator, the cluster's nodes
// and their roles.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary
// (go:embed): no build step, no CDN, it works offline. It polls one JSON
// endpoint, /api/state, and draws its charts as inline SVG. A driver
// (the simulator or a coordinator) fills a Feed; Handler serves it.
package dashboard

import (
	"embed"
	"encoding/json"
	"io/fs"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/fedzip/fedzip/internal/httpguard"
)

// State is what the page shows; /api/state serves it as JSON.
type State struct {
	// Title names the run; Mode is "simulate" or "coordinator"; Node is the
	// coordinator node's ID.
	Title string `json:"title"`
	Mode  string `json:"mode"`
	Node  string `json:"node,omitempty"`
	// Model, Strategy and UploadCodec describe the run.
	Model       string `json:"model,omitempty"`
	Strategy    string `json:"strategy,omitempty"`
	UploadCodec string `json:"upload_codec,omitempty"`
	// TotalRounds is the number of rounds the run will do (0: unbounded).
	TotalRounds int `json:"total_rounds"`
	// Round is the open round (or the last one); Phase is "starting",
	// "idle", "collecting", "running" or "finished".
	Round int    `json:"round"`
	Phase string `json:"phase"`
	// Selected and Received describe the open round: clients selected and
	// updates received so far. Deadline is when it stops waiting.
	Selected int        `json:"selected"`
	Received int        `json:"received"`
	Deadline *time.Time `json:"deadline,omitempty"`
	// Registered and Alive count clients (coordinator).
	Registered int `json:"registered,omitempty"`
	Alive      int `json:"alive,omitempty"`
	// Done says the run finished.
	Done bool `json:"done"`
	// Rounds are the closed rounds, oldest first. /api/state?since=N
	// returns only those after round N; RoundsTotal is the length of the
	// full list.
	Rounds      []Round `json:"rounds"`
	RoundsTotal int     `json:"rounds_total"`
	// Nodes are the coordinator cluster's nodes as this node sees them.
	Nodes []Node `json:"nodes,omitempty"`
	// Updated is when the state last changed.
	Updated time.Time `json:"updated"`
}

// Round is one closed round.
type Round struct {
	Round int `json:"round"`
	// TestAccuracy and TestLoss are set when the round's model was
	// evaluated; TrainLoss is the clients' mean training loss, when known.
	TestAccuracy *float64 `json:"test_accuracy,omitempty"`
	TestLoss     *float64 `json:"test_loss,omitempty"`
	TrainLoss    *float64 `json:"train_loss,omitempty"`
	// FedAccuracy and FedLoss are the round's federated evaluation (the
	// selected clients' held-out examples, weighted), of the model version
	// FedVersion the round trained from (Round−1); FedExamples counts the
	// examples. Unset in rounds without.
	FedAccuracy *float64 `json:"fed_accuracy,omitempty"`
	FedLoss     *float64 `json:"fed_loss,omitempty"`
	FedVersion  uint64   `json:"fed_version,omitempty"`
	FedExamples uint64   `json:"fed_examples,omitempty"`
	// UploadBytes and DownloadBytes are the bytes of the round's updates
	// and model downloads (on a coordinator, every message of the uploads
	// and downloads with its gRPC framing); Ratio is the updates' dense
	// float32 size over UploadBytes (0: unknown). The page leads with
	// their sum, the total.
	UploadBytes   int64   `json:"upload_bytes"`
	DownloadBytes int64   `json:"download_bytes"`
	Ratio         float64 `json:"ratio"`
	// DenseBytes is what the round's uploads and downloads would have cost
	// as dense float32 models, dense FedAvg's total (0: unknown); the page
	// shows DenseBytes over UploadBytes + DownloadBytes as the total
	// ratio.
	DenseBytes int64 `json:"dense_bytes,omitempty"`
	// WireBytes is, on a coordinator, every byte this node's gRPC port
	// read and wrote (TLS, HTTP/2 and gRPC framing, task polls and
	// keepalives included) between the previous round's close and this
	// one's (0: unknown).
	WireBytes int64 `json:"wire_bytes,omitempty"`
	// Selected clients, and how many of them Reported.
	Selected int     `json:"selected"`
	Reported int     `json:"reported"`
	Seconds  float64 `json:"seconds"`
}

// Node is one coordinator node.
type Node struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	GRPCAddr string `json:"grpc_addr,omitempty"`
	Role     string `json:"role"`
	Self     bool   `json:"self,omitempty"`
	Term     uint64 `json:"term,omitempty"`
	Commit   uint64 `json:"commit_index,omitempty"`
	Applied  uint64 `json:"applied_index,omitempty"`
}

// Feed holds the state a driver updates and the page reads. It is safe for
// concurrent use.
type Feed struct {
	mu sync.Mutex
	st State
}

// NewFeed returns a feed for a run titled title in mode ("simulate" or
// "coordinator").
func NewFeed(title, mode string) *Feed {
	return &Feed{st: State{Title: title, Mode: mode, Phase: "starting", Rounds: []Round{}, Updated: time.Now().UTC()}}
}

// Update changes the state under the feed's lock. fn must not keep s or
// its slices.
func (f *Feed) Update(fn func(s *State)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.st)
	f.st.Updated = time.Now().UTC()
}

// AddRound adds a closed round in round order, replacing one with the
// same number (a round reported again after a leader change). Values that
// are not finite are dropped: JSON cannot carry them.
func (f *Feed) AddRound(r Round) {
	finite := func(p *float64) *float64 {
		if p == nil || math.IsNaN(*p) || math.IsInf(*p, 0) {
			return nil
		}
		v := *p
		return &v
	}
	r.TestAccuracy, r.TestLoss, r.TrainLoss = finite(r.TestAccuracy), finite(r.TestLoss), finite(r.TrainLoss)
	r.FedAccuracy, r.FedLoss = finite(r.FedAccuracy), finite(r.FedLoss)
	if math.IsNaN(r.Ratio) || math.IsInf(r.Ratio, 0) {
		r.Ratio = 0
	}
	if math.IsNaN(r.Seconds) || math.IsInf(r.Seconds, 0) {
		r.Seconds = 0
	}
	f.Update(func(s *State) {
		i, found := slices.BinarySearchFunc(s.Rounds, r.Round, func(o Round, n int) int { return o.Round - n })
		if found {
			s.Rounds[i] = r
			return
		}
		s.Rounds = slices.Insert(s.Rounds, i, r)
	})
}

// Float returns a pointer to v, for Round's optional fields.
func Float(v float64) *float64 { return &v }

// Snapshot returns a copy of the state with the rounds after round since.
func (f *Feed) Snapshot(since int) State {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.st
	s.RoundsTotal = len(s.Rounds)
	i, _ := slices.BinarySearchFunc(s.Rounds, since+1, func(r Round, n int) int { return r.Round - n })
	s.Rounds = slices.Clone(s.Rounds[i:])
	s.Nodes = slices.Clone(s.Nodes)
	return s
}

//go:embed static
var static embed.FS

// Handler serves the page and its JSON feed: GET / (the page and its
// assets) and GET /api/state[?since=N]. It is read-only; with a token,
// /api/state needs it, as "Authorization: Bearer TOKEN" or as the session
// cookie a browser gets by opening the page once as /?token=TOKEN, which
// redirects to / without the token (httpguard.Login and
// ReadOnlySession): the token is never in the URL of a data request. The
// page's static files hold no data and need no token.
func Handler(feed *Feed, token string) http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err)
	}
	files := http.FileServerFS(sub)
	mux := http.NewServeMux()
	mux.Handle("/", httpguard.ReadOnly("", httpguard.Login(token, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'")
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))))
	mux.Handle("/api/state", httpguard.ReadOnlySession(token, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		since, _ := strconv.Atoi(r.URL.Query().Get("since"))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(feed.Snapshot(since))
	})))
	return mux
}

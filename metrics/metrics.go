// Package metrics defines fedzip's Prometheus metrics: those of a
// coordinator node (Coordinator) and those of a training client (Client).
//
// Every node has its own registry (NewRegistry), never the global default
// one, so that a test or a simulation can run several nodes in one process
// and scrape each. The hot path (one update received) costs a few atomic
// additions; gauges that describe state (the round, the clients, Raft) are
// read once per scrape from a State function instead of being kept up to
// date on every change.
//
// Metric names start with fedzip_; counters end in _total, durations are
// seconds and sizes bytes, as Prometheus's naming conventions ask.
package metrics

import (
	"math"
	"net/http"
	"strings"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
)

// NewRegistry returns a registry with the Go runtime and process
// collectors, for one node.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg in the Prometheus text format. It is read-only: wrap
// it with a token check (package httpguard) where it must be protected.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorHandling: promhttp.ContinueOnError})
}

// Latency buckets: 10 ms to about 80 s, doubling.
var latencyBuckets = prometheus.ExponentialBuckets(0.01, 2, 14)

// MaxSeconds bounds a duration a client reports: larger, negative or
// non-finite values are ignored rather than recorded.
const MaxSeconds = 24 * 3600

func validSeconds(s float64) bool { return s > 0 && s <= MaxSeconds && !math.IsNaN(s) }

// CodeReason names a gRPC status code as a refusal reason label:
// codes.ResourceExhausted is "resource_exhausted".
func CodeReason(c codes.Code) string { return snake(c.String()) }

// snake turns "ResourceExhausted" into "resource_exhausted".
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Directions of the bytes counters.
const (
	In  = "in"  // received by this node
	Out = "out" // sent by this node
)

// Kinds of the transfer counters: what the bytes were for.
const (
	Upload   = "upload"   // a client's update (Submit), both ways
	Download = "download" // a model sent to a client (Download), both ways
)

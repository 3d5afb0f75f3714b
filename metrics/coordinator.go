package metrics

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// CoordinatorState is a coordinator node's state at one instant, read once
// per scrape.
type CoordinatorState struct {
	// Round is the open round, or the last one if none is open;
	// ModelVersion the global model's version.
	Round        int
	ModelVersion uint64
	// Phase is the round phase: "idle", "collecting" or "finished"
	// ("" before the run is initialised).
	Phase string
	// Clients: registered; alive (eligible for selection); selected by the
	// open round; reporting (updates the open round accepted so far); late
	// (selected by the last closed round but not reported when it closed).
	ClientsRegistered, ClientsAlive, ClientsSelected, ClientsReporting, ClientsLate int
	// RaftRole is "leader", "follower", "candidate" or "shutdown".
	RaftRole                                                   string
	RaftTerm, RaftCommitIndex, RaftAppliedIndex, RaftLastIndex uint64
	// Nodes is the number of coordinator nodes in the Raft configuration.
	Nodes int
}

// RaftRoles are the values of the role label of fedzip_raft_role.
var RaftRoles = []string{"leader", "follower", "candidate", "shutdown"}

// Coordinator holds a coordinator node's metrics. Its methods may be
// called concurrently; a nil *Coordinator ignores every call, so that code
// paths need no checks when metrics are off.
type Coordinator struct {
	reg *prometheus.Registry

	accepted, duplicates prometheus.Counter
	refused              *prometheus.CounterVec
	bytes                *prometheus.CounterVec
	transfer, dense      *prometheus.CounterVec
	wireOnce             sync.Once
	download, train      prometheus.Histogram
	encode, upload       prometheus.Histogram
	accuracy, loss       prometheus.Gauge
	evalOnce             sync.Once
	fed                  [4]prometheus.Gauge // accuracy, loss, examples, reports
	fedOnce              sync.Once
	excluded             prometheus.Counter
	excludedLast         prometheus.Gauge

	// Totals, also read by the dashboard: payload bytes received in
	// accepted updates, the same updates' dense float32 size, and model
	// bytes sent.
	inAccepted, denseAccepted, out atomic.Int64
	nAccepted, nRefused            atomic.Int64
	// Transfer totals: the bytes of uploads and downloads with their
	// framing, and dense FedAvg's for the same; the wire counter.
	upBytes, downBytes, denseUp, denseDown atomic.Int64
	wireMu                                 sync.Mutex
	wire                                   func() (in, out int64)

	stateMu sync.Mutex
	state   func() CoordinatorState
}

// NewCoordinator registers a coordinator's metrics on reg (NewRegistry).
// State, called once per scrape, supplies the state gauges; SetState may
// set it later.
func NewCoordinator(reg *prometheus.Registry, state func() CoordinatorState) *Coordinator {
	m := &Coordinator{reg: reg, state: state}
	m.accepted = prometheus.NewCounter(prometheus.CounterOpts{Name: "fedzip_updates_accepted_total",
		Help: "Updates committed to the Raft log and acknowledged (duplicates included)."})
	m.duplicates = prometheus.NewCounter(prometheus.CounterOpts{Name: "fedzip_updates_duplicate_total",
		Help: "Accepted updates that resubmitted an already committed (round, client)."})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedzip_updates_refused_total",
		Help: "Updates refused, by reason: a sentinel (late, wrong_round, not_selected, bad_update, not_leader, ...) or the gRPC code (resource_exhausted, data_loss, ...)."},
		[]string{"reason"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedzip_bytes_total",
		Help: "Payload bytes of updates received (direction in, codec: the upload codec) and of models sent (direction out, codec float32 for whole models, the download codec for deltas)."},
		[]string{"direction", "codec"})
	m.transfer = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedzip_transfer_bytes_total",
		Help: "Bytes of uploads (kind upload: every message of the Submit calls both ways, refused ones too) and downloads (kind download: every message of the Download calls both ways), each message with gRPC's 5-byte framing; HTTP/2 and TLS framing are in fedzip_wire_bytes_total."},
		[]string{"kind"})
	m.dense = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedzip_dense_bytes_total",
		Help: "What the accepted uploads (kind upload) and the downloads served (kind download) would have cost as dense float32 models, 4 bytes per parameter each: dense FedAvg's bytes."},
		[]string{"kind"})
	total := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fedzip_total_ratio",
		Help: "Dense FedAvg's bytes both ways (fedzip_dense_bytes_total) over the uploads' and downloads' (fedzip_transfer_bytes_total), since the node started (0 before the first)."},
		func() float64 { return m.Totals().TotalRatio() })
	hist := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: latencyBuckets})
	}
	m.download = hist("fedzip_client_reported_download_seconds", "Model download time as clients report it with their updates.")
	m.train = hist("fedzip_client_reported_train_seconds", "Local training time as clients report it with their updates.")
	m.encode = hist("fedzip_client_reported_encode_seconds", "Update compression time as clients report it with their updates.")
	m.upload = hist("fedzip_client_reported_upload_seconds", "Upload time, first chunk to acknowledgment, as clients report it with their next update.")
	m.accuracy = prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedzip_test_accuracy", Help: "Test accuracy of the last evaluated global model (--eval)."})
	m.loss = prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedzip_test_loss", Help: "Mean test loss of the last evaluated global model (--eval)."})
	m.fed = [4]prometheus.Gauge{
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedzip_fed_accuracy", Help: "Federated evaluation: the selected clients' accuracy on their held-out examples, weighted by examples, of the model the last evaluating round trained from (--fed-eval-every)."}),
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedzip_fed_loss", Help: "Federated evaluation: the clients' mean held-out loss, weighted by examples (--fed-eval-every)."}),
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedzip_fed_examples", Help: "Federated evaluation: the held-out examples the last evaluation counted."}),
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedzip_fed_reports", Help: "Federated evaluation: the clients that reported in the last evaluation."}),
	}
	m.excluded = prometheus.NewCounter(prometheus.CounterOpts{Name: "fedzip_updates_excluded_total",
		Help: "Accepted updates the strategy left out of the aggregate (reputation, filter), summed over the rounds this node saw close; the \"round closed\" line names the clients."})
	m.excludedLast = prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedzip_clients_excluded",
		Help: "Clients whose update the strategy left out of the last closed round's aggregate."})
	ratio := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fedzip_compression_ratio",
		Help: "Dense float32 size of the accepted updates over their received payload size (1 for dense updates; 0 before the first)."},
		m.CompressionRatio)
	reg.MustRegister(m.accepted, m.duplicates, m.refused, m.bytes, m.transfer, m.dense, total, m.download, m.train, m.encode, m.upload, ratio, m.excluded, m.excludedLast, (*stateCollector)(m))
	return m
}

// SetState sets the function that supplies the state gauges.
func (m *Coordinator) SetState(state func() CoordinatorState) {
	if m == nil {
		return
	}
	m.stateMu.Lock()
	m.state = state
	m.stateMu.Unlock()
}

// Accepted counts an accepted update of payload bytes in codec, whose dense
// float32 form has dense bytes.
func (m *Coordinator) Accepted(codec string, payload, dense int, duplicate bool) {
	if m == nil {
		return
	}
	m.accepted.Inc()
	if duplicate {
		m.duplicates.Inc()
	}
	m.bytes.WithLabelValues(In, codec).Add(float64(payload))
	m.nAccepted.Add(1)
	m.inAccepted.Add(int64(payload))
	m.denseAccepted.Add(int64(dense))
}

// Refused counts a refused update; payload is the bytes received (0 if the
// refusal came before the payload).
func (m *Coordinator) Refused(reason, codec string, payload int) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(reason).Inc()
	if payload > 0 {
		m.bytes.WithLabelValues(In, codec).Add(float64(payload))
	}
	m.nRefused.Add(1)
}

// Sent counts model bytes sent to a client.
func (m *Coordinator) Sent(codec string, n int) {
	if m == nil {
		return
	}
	m.bytes.WithLabelValues(Out, codec).Add(float64(n))
	m.out.Add(int64(n))
}

// Transferred counts an upload or a download (kind Upload or Download)
// whose messages had n bytes with their framing, and whose dense float32
// form has dense bytes (0 for a refused upload).
func (m *Coordinator) Transferred(kind string, n, dense int64) {
	if m == nil {
		return
	}
	m.transfer.WithLabelValues(kind).Add(float64(n))
	if dense > 0 {
		m.dense.WithLabelValues(kind).Add(float64(dense))
	}
	if kind == Upload {
		m.upBytes.Add(n)
		m.denseUp.Add(dense)
	} else {
		m.downBytes.Add(n)
		m.denseDown.Add(dense)
	}
}

// CountWire exports the bytes read (in) and written (out) by the node's
// gRPC connections as fedzip_wire_bytes_total, read from bytes at every
// scrape (transport.WireCounter.Bytes). Call it once.
func (m *Coordinator) CountWire(bytes func() (in, out int64)) {
	if m == nil {
		return
	}
	m.wireMu.Lock()
	m.wire = bytes
	m.wireMu.Unlock()
	m.wireOnce.Do(func() {
		help := "Every byte the node's gRPC port read (direction in) and wrote (direction out), below TLS: TLS, HTTP/2 and gRPC framing, and every call (task polls, registrations, uploads, downloads, keepalives)."
		for _, d := range []string{In, Out} {
			m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fedzip_wire_bytes_total", Help: help, ConstLabels: prometheus.Labels{"direction": d}},
				func() float64 {
					in, out := m.wireBytes()
					if d == In {
						return float64(in)
					}
					return float64(out)
				}))
		}
	})
}

func (m *Coordinator) wireBytes() (in, out int64) {
	m.wireMu.Lock()
	f := m.wire
	m.wireMu.Unlock()
	if f == nil {
		return 0, 0
	}
	return f()
}

// ClientTimings records the durations a client reported with an update;
// values that are zero, negative, not finite or above MaxSeconds are
// skipped.
func (m *Coordinator) ClientTimings(download, train, encode, upload float64) {
	if m == nil {
		return
	}
	for _, o := range []struct {
		h prometheus.Histogram
		v float64
	}{{m.download, download}, {m.train, train}, {m.encode, encode}, {m.upload, upload}} {
		if validSeconds(o.v) {
			o.h.Observe(o.v)
		}
	}
}

// Evaluated sets the test accuracy and loss of the newest global model.
// The two gauges appear on the first call.
func (m *Coordinator) Evaluated(accuracy, loss float64) {
	if m == nil {
		return
	}
	m.evalOnce.Do(func() { m.reg.MustRegister(m.accuracy, m.loss) })
	m.accuracy.Set(accuracy)
	m.loss.Set(loss)
}

// Excluded records a closed round in which the strategy left n accepted
// updates out of the aggregate (0 for none): the counter grows by n and
// the gauge holds n. Call it once per closed round.
func (m *Coordinator) Excluded(n int) {
	if m == nil {
		return
	}
	m.excluded.Add(float64(max(n, 0)))
	m.excludedLast.Set(float64(max(n, 0)))
}

// FedEvaluated sets the gauges of the last federated evaluation: the
// weighted accuracy and loss, the examples and the reports. The gauges
// appear on the first call.
func (m *Coordinator) FedEvaluated(accuracy, loss float64, examples uint64, reports int) {
	if m == nil {
		return
	}
	m.fedOnce.Do(func() { m.reg.MustRegister(m.fed[0], m.fed[1], m.fed[2], m.fed[3]) })
	m.fed[0].Set(accuracy)
	m.fed[1].Set(loss)
	m.fed[2].Set(float64(examples))
	m.fed[3].Set(float64(reports))
}

// CompressionRatio returns the dense size of the accepted updates over
// their payload size, 0 before the first.
func (m *Coordinator) CompressionRatio() float64 {
	if m == nil {
		return 0
	}
	in := m.inAccepted.Load()
	if in == 0 {
		return 0
	}
	return float64(m.denseAccepted.Load()) / float64(in)
}

// Totals are a coordinator's running totals since it started.
type Totals struct {
	Accepted, Refused int64
	// BytesIn are the payload bytes of accepted updates, DenseIn their
	// dense float32 size, BytesOut the model bytes sent.
	BytesIn, DenseIn, BytesOut int64
	// UploadBytes and DownloadBytes are the uploads' and downloads' bytes
	// with their framing (Transferred), DenseUpload and DenseDownload
	// dense FedAvg's for the same; WireIn and WireOut what the gRPC
	// connections read and wrote (CountWire).
	UploadBytes, DownloadBytes, DenseUpload, DenseDownload int64
	WireIn, WireOut                                        int64
}

// TotalRatio is dense FedAvg's bytes both ways over the uploads' and
// downloads', 0 when either is 0.
func (t Totals) TotalRatio() float64 {
	d, n := t.DenseUpload+t.DenseDownload, t.UploadBytes+t.DownloadBytes
	if d <= 0 || n <= 0 {
		return 0
	}
	return float64(d) / float64(n)
}

// Totals returns the running totals (zero for a nil m).
func (m *Coordinator) Totals() Totals {
	if m == nil {
		return Totals{}
	}
	t := Totals{Accepted: m.nAccepted.Load(), Refused: m.nRefused.Load(), BytesIn: m.inAccepted.Load(),
		DenseIn: m.denseAccepted.Load(), BytesOut: m.out.Load(), UploadBytes: m.upBytes.Load(), DownloadBytes: m.downBytes.Load(),
		DenseUpload: m.denseUp.Load(), DenseDownload: m.denseDown.Load()}
	t.WireIn, t.WireOut = m.wireBytes()
	return t
}

// stateCollector emits the state gauges from one call of the state
// function per scrape.
type stateCollector Coordinator

var (
	descRound      = prometheus.NewDesc("fedzip_round", "The open round, or the last one when none is open.", nil, nil)
	descVersion    = prometheus.NewDesc("fedzip_model_version", "Version of the global model.", nil, nil)
	descPhase      = prometheus.NewDesc("fedzip_round_phase", "1 for the round's current phase.", []string{"phase"}, nil)
	descRegistered = prometheus.NewDesc("fedzip_clients_registered", "Registered clients.", nil, nil)
	descAlive      = prometheus.NewDesc("fedzip_clients_alive", "Clients alive, eligible for selection (membership gossip, or a poll within the alive window).", nil, nil)
	descSelected   = prometheus.NewDesc("fedzip_clients_selected", "Clients the open round selected (0 when none is open).", nil, nil)
	descReporting  = prometheus.NewDesc("fedzip_clients_reporting", "Updates the open round accepted so far.", nil, nil)
	descLate       = prometheus.NewDesc("fedzip_clients_late", "Clients the last closed round selected whose update had not arrived when it closed.", nil, nil)
	descRole       = prometheus.NewDesc("fedzip_raft_role", "1 for this node's current Raft role.", []string{"role"}, nil)
	descTerm       = prometheus.NewDesc("fedzip_raft_term", "Current Raft term.", nil, nil)
	descCommit     = prometheus.NewDesc("fedzip_raft_commit_index", "Raft commit index.", nil, nil)
	descApplied    = prometheus.NewDesc("fedzip_raft_applied_index", "Last Raft log index applied to the state machine.", nil, nil)
	descLast       = prometheus.NewDesc("fedzip_raft_last_log_index", "Last index in this node's Raft log.", nil, nil)
	descNodes      = prometheus.NewDesc("fedzip_raft_nodes", "Coordinator nodes in the Raft configuration.", nil, nil)
	phases         = []string{"idle", "collecting", "finished"}
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRound, descVersion, descPhase, descRegistered, descAlive, descSelected, descReporting,
		descLate, descRole, descTerm, descCommit, descApplied, descLast, descNodes} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.stateMu.Lock()
	f := c.state
	c.stateMu.Unlock()
	if f == nil {
		return
	}
	s := f()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	g(descRound, float64(s.Round))
	g(descVersion, float64(s.ModelVersion))
	for _, p := range phases {
		g(descPhase, b2f(p == s.Phase), p)
	}
	g(descRegistered, float64(s.ClientsRegistered))
	g(descAlive, float64(s.ClientsAlive))
	g(descSelected, float64(s.ClientsSelected))
	g(descReporting, float64(s.ClientsReporting))
	g(descLate, float64(s.ClientsLate))
	for _, r := range RaftRoles {
		g(descRole, b2f(r == s.RaftRole), r)
	}
	g(descTerm, float64(s.RaftTerm))
	g(descCommit, float64(s.RaftCommitIndex))
	g(descApplied, float64(s.RaftAppliedIndex))
	g(descLast, float64(s.RaftLastIndex))
	g(descNodes, float64(s.Nodes))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
